#!/usr/bin/env python3
"""HF transformers BF16 baseline for `nibble bench`: the same shapes on the same card.

A Qwen3-4B-shaped model (tests/fixtures/qwen3_4b_instruct_2507/config.json, random init: there is
no network on the GPU machine) in bfloat16 with SDPA attention. Measures what `nibble bench`
measures: device-to-device copy bandwidth, prefill tok/s at 512 and 2048 tokens (logits of the
last token only), decode tok/s at contexts 0, 4K and 32K (one token per forward with a KV cache,
greedy argmax kept on the device), and peak memory. Warm-up first; CUDA events; the median.

Usage: scripts/bench_hf.py [--json OUT.json]
"""
import argparse
import json
import os
import statistics
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "tests", "fixtures", "qwen3_4b_instruct_2507")


def timed(fn, reps, warmup=1):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for i in range(warmup + reps):
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        if i >= warmup:
            out.append(start.elapsed_time(end) / 1e3)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)

    n = 1 << 29  # 1 GiB of bf16
    a = torch.randn(n, device=dev, dtype=torch.bfloat16)
    b = torch.empty_like(a)
    copy_s = timed(lambda: b.copy_(a), reps=10, warmup=2)
    copy_gbps = 2 * a.numel() * 2 / copy_s / 1e9
    del a, b

    cfg = AutoConfig.from_pretrained(CONFIG)
    cfg.torch_dtype = torch.bfloat16
    with dev:
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    vocab = cfg.vocab_size
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "transformers": __import__("transformers").__version__, "copy_gbps": copy_gbps,
           "prefill": [], "decode": []}

    with torch.inference_mode():
        # Warm-up: cuBLAS handles, kernel selection and allocator growth stay out of the timings.
        warm = DynamicCache()
        model(input_ids=torch.randint(0, vocab, (1, 2048), device=dev), past_key_values=warm, use_cache=True,
              logits_to_keep=1)
        tok = torch.randint(0, vocab, (1, 1), device=dev)
        for _ in range(16):
            tok = model(input_ids=tok, past_key_values=warm, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
        model(input_ids=torch.randint(0, vocab, (1, 512), device=dev), logits_to_keep=1, use_cache=False)
        del warm
        torch.cuda.synchronize()
        for tokens in (512, 2048):
            ids = torch.randint(0, vocab, (1, tokens), device=dev)
            s = timed(lambda: model(input_ids=ids, logits_to_keep=1, use_cache=False), reps=3)
            res["prefill"].append({"tokens": tokens, "seconds": s, "tok_s": tokens / s})

        steps = 32
        for ctx in (0, 4096, 32768):
            cache = DynamicCache()
            for off in range(0, ctx, 2048):  # fill the cache with a chunked prefill
                ids = torch.randint(0, vocab, (1, min(2048, ctx - off)), device=dev)
                model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)

            def decode():
                tok = torch.randint(0, vocab, (1, 1), device=dev)
                for _ in range(steps):
                    out = model(input_ids=tok, past_key_values=cache, use_cache=True, logits_to_keep=1)
                    tok = out.logits[:, -1:].argmax(-1)
                cache.crop(ctx)

            s = timed(decode, reps=3) / steps
            res["decode"].append({"context": ctx, "ms_per_token": s * 1e3, "tok_s": 1 / s})
            del cache
            torch.cuda.empty_cache()
    res["peak_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
