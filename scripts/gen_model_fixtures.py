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
      nvfp4_greedy_ids I64 [G]    32 greedy tokens of the same float64 model with every linear
                                  (q k v o gate up down) quantised to NVFP4 as quant/nvfp4.h does
                                  (per-tensor global scale, ModelOpt rounding), the rest unchanged
      rope_inv_freq  F32 [hd/2]   HF's rotary inv_freq (after linear / yarn scaling)
      rope_attention_scaling F64 [1]  HF's cos/sin multiplier (yarn: 0.1 ln(factor) + 1; else 1)
    and reference.json: the same scalars in readable form, the greedy margins, the bf16 noise,
    versions.
  OUTDIR/demo/tiny-qwen3/: a Qwen3 model with the real 151936-token vocabulary (random BF16
      weights) for the README demo; the lead adds the real tokenizer files.
The lead copies OUTDIR/models/* to tests/fixtures/models/ and OUTDIR/demo/tiny-qwen3 to models/.

How the reference is computed: the model is saved (F32 or BF16), reloaded from disk with
dtype=float64 (BF16 weights upcast exactly, so the reference uses exactly the stored weights) and
run on the CPU with SDPA attention. HF itself computes RMSNorm and the RoPE cos/sin in float32
even in a float64 model; everything else is float64. Greedy decoding is a plain argmax loop over
full-sequence forwards (no KV cache, no EOS), so generate()'s stopping rules cannot interfere.

Weights. Random first (std ~ 8 logits over a 512 vocabulary): embeddings and lm_head N(0, 1),
projections N(0, 1/in) (o_proj, down_proj 9/in), norm weights U(0.5, 1.5), biases N(0, 0.5).
A random model's greedy steps are not decisive: the top-2 margin of 512 roughly Gaussian logits
is ~ std / 3.5 on average and near 0 at some step of 32 (the previous fixtures, each the best of
up to 20 seeds, had steps won by a few hundredths of a logit), below the noise of a bf16 engine
(|logit| moves by 0.2-0.8). So the random model is then trained briefly to be sure of its own
greedy continuation: the 32 greedy ids of the random model from a random prompt become targets,
and Adam minimises a hinge loss sum_j max(0, M - (l_target - l_j)) over the 32 steps (teacher
forcing) until every step's margin is >= M = 8 logits, for the model itself and, at the same
time, for the model with every linear fake-quantised to NVFP4 (straight-through gradient), so that
the NVFP4 model's greedy path is the same and as decisive. It takes 17-55 steps at lr 1e-3 for
the current fixtures: a small change that leaves every op in play (the logits keep std ~ 8,
|logit| <= 53). The stored weights (BF16 rounding included) are then checked from disk, as below.

Acceptance (per fixture; otherwise the next seed is tried): the greedy ids hold at least 4
distinct tokens (no collapsed repeat), and along the 32-step greedy path, for the float64 model
and for its NVFP4 version, every top-1 - top-2 margin is >= max(1, 4 * noise). noise is the
largest |logit - float64 logit| of HF's own bf16 inference of the same model on the same
sequence (weights and activations bf16, the places where the CUDA backend rounds; logits taken
in fp32 from the bf16 final hidden state, as the CUDA backend does). Two logits that each move by
at most noise cannot swap unless their margin is < 2 * noise; 4x leaves 2x for kernels that round
differently from HF's. A GPU test that sees a different greedy id is then a bug, not a tie.
"""

import copy
import inspect
import json
import math
import os
import sys
import time

import torch
import transformers
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

VOCAB = 512
PROMPT_LEN = 12
GREEDY = 32
MAX_SEED_TRIES = 200
MIN_DISTINCT = 4  # greedy ids must not collapse into one repeated token
# Acceptance bound on every greedy margin: max(MIN_MARGIN, NOISE_FACTOR * bf16 noise) (docstring).
MIN_MARGIN = 1.0
NOISE_FACTOR = 4.0
# Training: hinge target in logits (~1 std of the logits; ~3x the bound at the bf16 noise measured,
# 0.38-0.72, bound 1.5-2.9), Adam learning rate and step limit (the fixtures needed 17-55 steps).
TRAIN_MARGIN = 8.0
TRAIN_LR = 1e-3
TRAIN_STEPS = 500
LINEARS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
           "up_proj.weight", "down_proj.weight")

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
    """Random weights (then trained, see build_fixture): see the module docstring."""
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


def top2_margins(rows):
    """(G, V) logits -> (G,) top-1 minus top-2."""
    top = torch.topk(rows, 2, dim=-1).values
    return top[:, 0] - top[:, 1]


def greedy(model, prompt, steps):
    """Argmax loop over full forwards; returns ids, per-step logit rows, min top-2 margin."""
    ids = list(prompt)
    rows = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids]), use_cache=False).logits[0, -1]
            rows.append(logits.clone())
            ids.append(int(torch.argmax(logits)))
    rows = torch.stack(rows)
    return ids[len(prompt):], rows, float(top2_margins(rows).min())


# ---------------------------------------------------------------------------------------------
# NVFP4 as quant/nvfp4.h quantize_nvfp4(w, out, in) computes it (ModelOpt's dynamic path with the
# tensor's own global scale amax * fp32(1/2688)); fp32 arithmetic in the same order.

E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
E2M1_BOUNDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def nvfp4_dequant(w):
    """(out, in) weight -> its NVFP4 round trip (float64): e2m1 * fp8(block scale) * global."""
    w = w.detach().to(torch.float32)
    out, k = w.shape
    g = w.abs().amax() * torch.tensor(1.0 / 2688.0, dtype=torch.float32)
    if not g > 0:
        g = torch.tensor(1.0, dtype=torch.float32)
    blocks = w.reshape(out, k // 16, 16)
    s = blocks.abs().amax(-1) / (6.0 * g)
    s = torch.where(s == 0, torch.ones_like(s), s).clamp(min=2.0**-9)
    s = s.to(torch.float8_e4m3fn).to(torch.float32)
    denom = (s * g).unsqueeze(-1)
    x = blocks / denom
    a = x.abs()
    ord_ = sum((a > b).to(torch.int64) for b in E2M1_BOUNDS)
    ord_ = ord_ + ((a == 0.75) | (a == 1.75) | (a == 3.5)).to(torch.int64)  # ties to even
    vals = E2M1_GRID[ord_].to(torch.float64) * torch.where(torch.signbit(x), -1.0, 1.0).to(torch.float64)
    return (vals * denom.to(torch.float64)).reshape(out, k)


def linear_names(model):
    return [n for n, _ in model.named_parameters() if n.endswith(LINEARS)]


def nvfp4_model(model):
    """A copy of `model` with every linear's weight replaced by its NVFP4 round trip."""
    q = copy.deepcopy(model)
    params = dict(q.named_parameters())
    with torch.no_grad():
        for n in linear_names(q):
            params[n].copy_(nvfp4_dequant(params[n]).to(params[n].dtype))
    return q


def bf16_noise(model, seq, rows_from):
    """Largest |logit - model's logit| of HF's bf16 inference of `model` over rows rows_from.. of
    `seq` (see the docstring). Runs on the GPU when there is one."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m = copy.deepcopy(model).to(torch.bfloat16).to(dev)
    ids = torch.tensor([seq])
    with torch.no_grad():
        ref = model(ids, use_cache=False).logits[0, rows_from:]
        h = m.model(input_ids=ids.to(dev), use_cache=False).last_hidden_state[0, rows_from:]
        got = (h.float() @ m.lm_head.weight.float().T).to("cpu", torch.float64)
    return float((got - ref.to(torch.float64)).abs().max())


def hinge(rows, target, margin):
    """sum over steps and tokens j != target of max(0, margin - (l_target - l_j))."""
    lt = rows.gather(-1, target.unsqueeze(-1))
    viol = torch.relu(margin - (lt - rows)).scatter(-1, target.unsqueeze(-1), 0.0)
    return viol.sum()


def train_decisive(model, prompt, target, margin):
    """Adam on the hinge loss of the model and its NVFP4 version (straight-through) until every
    teacher-forced step of `target` wins by `margin` in both; returns the steps taken."""
    seq = torch.tensor([prompt + target[:-1]])
    tgt = torch.tensor(target)
    p0 = len(prompt) - 1
    params = dict(model.named_parameters())
    names = linear_names(model)
    opt = torch.optim.Adam(params.values(), lr=TRAIN_LR)
    for step in range(TRAIN_STEPS):
        rows = model(seq, use_cache=False).logits[0, p0:]
        ste = {n: params[n] + (nvfp4_dequant(params[n]).to(params[n].dtype) - params[n].detach())
               for n in names}
        qrows = torch.func.functional_call(model, ste, (seq,), {"use_cache": False}).logits[0, p0:]
        loss = hinge(rows, tgt, margin) + hinge(qrows, tgt, margin)
        if float(loss.detach()) == 0.0:
            return step
        opt.zero_grad()
        loss.backward()
        opt.step()
    return TRAIN_STEPS


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
    t0 = time.time()
    for attempt in range(MAX_SEED_TRIES):
        seed = 1000 + attempt
        gen = torch.Generator().manual_seed(seed)
        config = make_config(arch, kw, rope_scaling)
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.float32)
        model.eval()
        reinit(model, gen)
        prompt = torch.randint(3, VOCAB, (PROMPT_LEN,), generator=gen).tolist()
        target, _, _ = greedy(model, prompt, GREEDY)
        if len(set(target)) < MIN_DISTINCT:
            print(f"  {name}: seed {seed}: random model's greedy ids hold {len(set(target))} distinct "
                  "tokens; next seed")
            continue
        # Train, save, check from disk; a margin short of its bound (not a collapse) gets up to
        # two more rounds of training with a higher target before the next seed.
        goal, steps, ok = TRAIN_MARGIN, 0, False
        for _ in range(3):
            steps += train_decisive(model, prompt, target, goal)
            copy.deepcopy(model).to(dtype).save_pretrained(path)
            write_generation_config(path, 1, 2)

            ref = load_f64(path)
            with torch.no_grad():
                prompt_logits = ref(torch.tensor([prompt]), use_cache=False).logits[0].clone()
            ids, rows, margin = greedy(ref, prompt, GREEDY)
            qref = nvfp4_model(ref)
            qids, qrows, qmargin = greedy(qref, prompt, GREEDY)
            noise = bf16_noise(ref, prompt + ids[:-1], PROMPT_LEN - 1)
            qnoise = bf16_noise(qref, prompt + qids[:-1], PROMPT_LEN - 1)
            bound = max(MIN_MARGIN, NOISE_FACTOR * noise)
            qbound = max(MIN_MARGIN, NOISE_FACTOR * qnoise)
            report = (f"seed {seed}: trained {steps} steps (target {goal:.1f}); min top-2 margin "
                      f"{margin:.3f} (bound {bound:.3f}, bf16 noise {noise:.3f}), NVFP4 {qmargin:.3f} "
                      f"(bound {qbound:.3f}, noise {qnoise:.3f}); distinct {len(set(ids))}/"
                      f"{len(set(qids))}; path = target {ids == target}, NVFP4 path = target "
                      f"{qids == target}; {time.time() - t0:.1f} s")
            if len(set(ids)) < MIN_DISTINCT or len(set(qids)) < MIN_DISTINCT:
                break
            if margin >= bound and qmargin >= qbound:
                ok = True
                break
            print(f"  {name}: {report}; training on")
            goal = max(1.5 * goal, 2.0 * max(bound, qbound))
        if ok:
            break
        print(f"  {name}: {report}; next seed")
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
        "nvfp4_greedy_ids": torch.tensor(qids, dtype=torch.int64),
        "rope_inv_freq": inv_freq.contiguous(),
        "rope_attention_scaling": torch.tensor([att_scaling], dtype=torch.float64),
    }, os.path.join(path, "reference.safetensors"))
    cfg = ref.config
    meta = {
        "name": name, "arch": arch, "seed": seed, "dtype": str(dtype).replace("torch.", ""),
        "architectures": cfg.architectures, "rope_type": rope_type,
        "rope_attention_scaling": att_scaling, "input_ids": prompt, "greedy_ids": ids,
        "nvfp4_greedy_ids": qids, "train_steps": steps, "train_margin": goal,
        "min_top2_margin": margin, "bf16_noise": noise,
        "nvfp4_min_top2_margin": qmargin, "nvfp4_bf16_noise": qnoise,
        "reference": "HF float64 (RMSNorm and RoPE cos/sin in float32 as HF does), SDPA, CPU",
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    print(f"{name}: {arch} {meta['dtype']} rope {rope_type} (scaling {att_scaling:.4f}) {report}; "
          f"greedy {ids[:8]}... {size / 1024:.0f} KiB")
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
