#!/usr/bin/env python3
"""Tiny random HF models with float64 reference logits and greedy ids, for tests/test_model_parity.cpp.

Usage (repo root as cwd, on the GPU machine: torch + transformers + safetensors):
    python3 scripts/gen_model_fixtures.py OUTDIR

Writes
  OUTDIR/models/<name>/config.json, model.safetensors, generation_config.json  (save_pretrained)
  OUTDIR/models/<name>/reference.safetensors:
      input_ids      I64 [P]      the prompt (P = 12)
      prompt_logits  F64 [P, V]   HF logits at every prompt position (float64 model)
      greedy_ids     I64 [G]      32 greedy tokens after the prompt (float64 model, no EOS stop)
      greedy_logits  F32 [G, V]   the logits each greedy token was the argmax of (row 0 is the
                                  last prompt row); F32 to keep the fixtures small
      rope_inv_freq  F32 [hd/2]   HF's rotary inv_freq (after linear / yarn scaling)
      rope_attention_scaling F64 [1]  HF's cos/sin multiplier (yarn: 0.1 ln(factor) + 1; else 1)
    and reference.json: the same scalars in readable form, the minimal top-2 gap, versions.
  OUTDIR/demo/tiny-qwen3/: a Qwen3 model with the real 151936-token vocabulary (random BF16
      weights) for the README demo; the lead adds the real tokenizer files.
The lead copies OUTDIR/models/* to tests/fixtures/models/ and OUTDIR/demo/tiny-qwen3 to models/.

How the reference is computed: the model is saved (F32 or BF16), reloaded from disk with
dtype=float64 (BF16 weights upcast exactly, so the reference uses exactly the stored weights) and
run on the CPU with SDPA attention. HF itself computes RMSNorm and the RoPE cos/sin in float32
even in a float64 model; everything else is float64. Greedy decoding is a plain argmax loop over
full-sequence forwards (no KV cache, no EOS), so generate()'s stopping rules cannot interfere.

Weights are re-initialised so that logits are decisive (std ~ 8 over a 512 vocabulary): embeddings
and lm_head N(0, 1), projections N(0, 1/in) (o_proj, down_proj 9/in), norm weights U(0.5, 1.5),
biases N(0, 0.5). A config is accepted only when every greedy step's top-2 gap is > 1e-3 relative
to max(1, |top1|) and the 32 greedy ids hold at least 4 distinct tokens; otherwise the next seed
is tried.
"""

import inspect
import json
import math
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

VOCAB = 512
PROMPT_LEN = 12
GREEDY = 32
MIN_REL_GAP = 1e-3
MAX_SEED_TRIES = 200
MIN_DISTINCT = 4  # greedy ids must not collapse into one repeated token

# name -> (arch, config kwargs, storage dtype, rope scaling or None)
# Common: vocab 512, hidden 64, intermediate 96, 2 layers (one has 3), eps 1e-6.
CONFIGS = [
    ("qwen3_tied_gqa_f32", "qwen3",
     dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
          tie_word_embeddings=True, rope_theta=1_000_000.0), torch.float32, None),
    ("qwen3_untied_mha_f32", "qwen3",
     dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
          tie_word_embeddings=False, rope_theta=10_000.0), torch.float32, None),
    # head_dim (32) != hidden / heads (16): q_proj (128, 64), o_proj (64, 128)
    ("qwen3_hd32_gqa_bf16", "qwen3",
     dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
          tie_word_embeddings=True, rope_theta=1_000_000.0), torch.bfloat16, None),
    # yarn: max_position_embeddings / original_max_position_embeddings == factor, so every
    # transformers version (explicit factor, or factor derived from the ratio) agrees; the
    # 44-token sequence runs past the original 32 positions.
    ("qwen3_yarn_f32", "qwen3",
     dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
          tie_word_embeddings=True, rope_theta=10_000.0, max_position_embeddings=128), torch.float32,
     {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}),
    ("qwen3_linear_rope_f32", "qwen3",
     dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
          tie_word_embeddings=True, rope_theta=10_000.0), torch.float32,
     {"rope_type": "linear", "factor": 2.0}),
    ("llama_gqa_f32", "llama",
     dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
          tie_word_embeddings=False, rope_theta=10_000.0), torch.float32, None),
    ("qwen2_bias_f32", "qwen2",
     dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
          tie_word_embeddings=True, rope_theta=1_000_000.0), torch.float32, None),
]

ARCH = {
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}


def make_config(arch, kw, rope_scaling, vocab=VOCAB, hidden=64, intermediate=96, max_pos=256,
                bos=1, eos=2):
    cfg_cls, _ = ARCH[arch]
    kw = dict(kw)
    theta = kw.pop("rope_theta")
    args = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                max_position_embeddings=kw.pop("max_position_embeddings", max_pos), rms_norm_eps=1e-6,
                hidden_act="silu", bos_token_id=bos, eos_token_id=eos, **kw)
    if arch == "llama":
        args.update(attention_bias=False, mlp_bias=False)
    params = inspect.signature(cfg_cls.__init__).parameters
    if "rope_parameters" in params:  # transformers >= 5: theta lives in rope_parameters
        rp = {"rope_type": "default", "rope_theta": theta}
        if rope_scaling:
            rp.update(rope_scaling)
        args["rope_parameters"] = rp
    else:
        args["rope_theta"] = theta
        if rope_scaling:
            rs = dict(rope_scaling)
            rs["type"] = rs["rope_type"]
            args["rope_scaling"] = rs
    return cfg_cls(**args)


def reinit(model, gen):
    """Decisive logits: see the module docstring."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
            elif "embed_tokens" in name or name.startswith("lm_head"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif p.dim() == 2:
                # o_proj / down_proj write into the residual stream: 3x so that the layers, not the
                # token's own embedding, dominate the final state (else a tied model just repeats
                # its input token).
                gain = 3.0 if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * gain / math.sqrt(p.shape[1]))
            else:
                raise RuntimeError(f"unexpected parameter {name} {tuple(p.shape)}")


def load_f64(path):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64, attn_implementation="sdpa")
    m.eval()
    return m


def greedy(model, prompt, steps):
    """Argmax loop over full forwards; returns ids, per-step logit rows, min relative top-2 gap."""
    ids = list(prompt)
    rows, min_gap = [], float("inf")
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids]), use_cache=False).logits[0, -1]
            top = torch.topk(logits, 2).values
            gap = float(top[0] - top[1]) / max(1.0, abs(float(top[0])))
            min_gap = min(min_gap, gap)
            rows.append(logits.clone())
            ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], torch.stack(rows), min_gap


def rope_of(model):
    rot = model.model.rotary_emb
    return rot.inv_freq.detach().to(torch.float32).clone(), float(rot.attention_scaling), getattr(
        rot, "rope_type", "?")


def write_generation_config(path, bos, eos):
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "do_sample": False}, f, indent=2)
        f.write("\n")


def build_fixture(outdir, name, arch, kw, dtype, rope_scaling):
    path = os.path.join(outdir, "models", name)
    os.makedirs(path, exist_ok=True)
    _, model_cls = ARCH[arch]
    for attempt in range(MAX_SEED_TRIES):
        seed = 1000 + attempt
        gen = torch.Generator().manual_seed(seed)
        config = make_config(arch, kw, rope_scaling)
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.float32)
        reinit(model, gen)
        model = model.to(dtype)
        model.save_pretrained(path)
        write_generation_config(path, 1, 2)

        ref = load_f64(path)
        prompt = torch.randint(3, VOCAB, (PROMPT_LEN,), generator=gen).tolist()
        with torch.no_grad():
            prompt_logits = ref(torch.tensor([prompt]), use_cache=False).logits[0].clone()
        ids, rows, min_gap = greedy(ref, prompt, GREEDY)
        if min_gap > MIN_REL_GAP and len(set(ids)) >= MIN_DISTINCT:
            break
        print(f"  {name}: seed {seed}: min top-2 gap {min_gap:.2e}, {len(set(ids))} distinct greedy ids; "
              "next seed")
    else:
        raise RuntimeError(f"{name}: no seed gave decisive greedy steps")

    inv_freq, att_scaling, rope_type = rope_of(ref)
    expected_type = (rope_scaling or {}).get("rope_type", "default")
    if rope_type != expected_type:
        raise RuntimeError(f"{name}: HF rotary rope_type {rope_type!r}, expected {expected_type!r}")
    # Row 0 of the greedy rows is the last prompt row: a self-check of the two forwards.
    if not torch.allclose(rows[0], prompt_logits[-1], rtol=1e-9, atol=1e-9):
        raise RuntimeError(f"{name}: greedy row 0 differs from the last prompt row")

    save_file({
        "input_ids": torch.tensor(prompt, dtype=torch.int64),
        "prompt_logits": prompt_logits.to(torch.float64).contiguous(),
        "greedy_ids": torch.tensor(ids, dtype=torch.int64),
        "greedy_logits": rows.to(torch.float32).contiguous(),
        "rope_inv_freq": inv_freq.contiguous(),
        "rope_attention_scaling": torch.tensor([att_scaling], dtype=torch.float64),
    }, os.path.join(path, "reference.safetensors"))
    cfg = ref.config
    meta = {
        "name": name, "arch": arch, "seed": seed, "dtype": str(dtype).replace("torch.", ""),
        "architectures": cfg.architectures, "rope_type": rope_type,
        "rope_attention_scaling": att_scaling, "input_ids": prompt, "greedy_ids": ids,
        "min_rel_top2_gap": min_gap,
        "reference": "HF float64 (RMSNorm and RoPE cos/sin in float32 as HF does), SDPA, CPU",
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    print(f"{name}: {arch} {meta['dtype']} seed {seed} rope {rope_type} (scaling {att_scaling:.4f}) "
          f"min top-2 gap {min_gap:.3e} greedy {ids[:8]}... {size / 1024:.0f} KiB")
    return size


def build_demo(outdir):
    """Qwen3 with the real vocabulary, for the README (random weights: it prints nonsense)."""
    path = os.path.join(outdir, "demo", "tiny-qwen3")
    os.makedirs(path, exist_ok=True)
    config = make_config("qwen3", dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       head_dim=32, tie_word_embeddings=True, rope_theta=1_000_000.0),
                         None, vocab=151936, hidden=64, intermediate=128, max_pos=4096, bos=151643,
                         eos=151645)
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    model = Qwen3ForCausalLM(config).to(torch.float32)
    reinit(model, gen)
    model.to(torch.bfloat16).save_pretrained(path)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                   "do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8}, f, indent=2)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    print(f"demo/tiny-qwen3: vocab 151936, hidden 64, 2 layers, BF16, {size / 1e6:.1f} MB")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 scripts/gen_model_fixtures.py OUTDIR")
    outdir = sys.argv[1]
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    total = 0
    for name, arch, kw, dtype, rope in CONFIGS:
        total += build_fixture(outdir, name, arch, kw, dtype, rope)
    print(f"models/: {len(CONFIGS)} fixtures, {total / 1e6:.2f} MB total")
    build_demo(outdir)


if __name__ == "__main__":
    main()
