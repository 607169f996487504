#!/usr/bin/env python3
"""Reference FP8 E4M3 casts and NVFP4 quantisations for tests/test_quant_fixtures.cpp.

Usage (repo root as cwd):  python3 scripts/gen_quant_fixtures.py OUTDIR
Writes OUTDIR/quant/fp8_e4m3.safetensors, OUTDIR/quant/nvfp4.safetensors and OUTDIR/quant/meta.json;
copy the OUTDIR/quant folder to tests/fixtures/quant/.

fp8_e4m3.safetensors
  decode_f32   F32 [256]  torch.arange(256, uint8).view(float8_e4m3fn).float()  (NaN for 0x7f, 0xff)
  encode_in    F32 [N]    values from subnormals to beyond 448, exact ties, +-1 ulp around ties,
                          +-0, +-inf, NaN
  encode_cpu   U8  [N]    encode_in.to(torch.float8_e4m3fn).view(uint8) on the CPU
  encode_cuda  U8  [N]    the same cast on the GPU (only when CUDA is available)

nvfp4.safetensors, per case C:
  C.input           F32 or BF16 [out, in]   the weight
  C.weight          U8  [out, in/2]         packed E2M1 codes, even k in the low nibble
  C.weight_scale    F8_E4M3 [out, in/16]    block scales
  C.weight_scale_2  F32 []                  global scale
  C.scaled          F32 [out, in]           w / (float(scale) * global) before E2M1 rounding
  C.dequant         F32 [out, in]           e2m1[q] * (float(scale) * global)
  C.cuda.weight, C.cuda.weight_scale, C.cuda.weight_scale_2   the same quantisation run on the GPU

The NVFP4 quantiser below is NVIDIA ModelOpt's NVFP4QTensor dynamic path
(modelopt/torch/quantization/qtensor/nvfp4_tensor.py: get_weights_scaling_factor_2,
get_weights_scaling_factor, quantize, _cast_fp4, dequantize) written out with the same torch ops
in the same order, so that the fp32 roundings are the same. ModelOpt itself is not needed.
"""

import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

E2M1_BOUNDS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5])
E2M1_VALUES = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6])
BLOCK = 16


# ---------------------------------------------------------------------------------------------
# ModelOpt NVFP4 (dynamic weight path)


def global_scale(w):
    # get_weights_scaling_factor_2: reduce_amax(input).float() / (6.0 * 448.0)
    return w.abs().amax().float() / (6.0 * 448.0)


def block_scales(w, g):
    # get_weights_scaling_factor (current ModelOpt, with the clamp at the fp8 subnormal minimum)
    per_block_amax = w.view(*w.shape[:-1], -1, BLOCK).abs().amax(dim=-1).float()
    per_block_scale = per_block_amax / (6.0 * g)
    per_block_scale[per_block_scale == 0] = 1.0
    per_block_scale = per_block_scale.clamp_(min=2**-9).to(torch.float8_e4m3fn)
    return per_block_scale


def cast_fp4(x):
    # _cast_fp4: searchsorted over the bounds, +1 at the odd bounds (ties to even)
    bounds = E2M1_BOUNDS.to(x.device)
    sign_bit = (x < 0).to(torch.uint8)
    a = x.abs()
    ord_ = torch.searchsorted(bounds, a, out_int32=True).to(torch.uint8)
    odd_bounds = bounds[[1, 3, 5]]  # 0.75, 1.75, 3.5
    eq = torch.any(a.unsqueeze(-1) == odd_bounds, dim=-1).to(torch.uint8)
    return (sign_bit << 3) + ord_ + eq


def quantize(w, device):
    w = w.to(device)
    g = global_scale(w)
    s = block_scales(w, g)
    shape = w.shape
    scaled = w.view(*shape[:-1], -1, BLOCK) / ((s.to(torch.float32) * g).unsqueeze(-1))
    scaled = scaled.view(shape)
    q = cast_fp4(scaled.clone())
    packed = (q[..., 1::2] << 4) | q[..., 0::2]
    # dequantize (non-fast path): e2m1 * (float(scale) * global)
    per_block = s.to(torch.float32) * g
    vals = E2M1_VALUES.to(device)[q.long()]
    deq = (vals.view(*shape[:-1], -1, BLOCK) * per_block.unsqueeze(-1)).view(shape)
    return {
        "weight": packed.cpu().contiguous(),
        "weight_scale": s.cpu().contiguous(),
        "weight_scale_2": g.cpu().reshape(()).contiguous(),
        "scaled": scaled.float().cpu().contiguous(),
        "dequant": deq.float().cpu().contiguous(),
    }


# ---------------------------------------------------------------------------------------------
# inputs


def fp8_values():
    """All finite non-negative float8_e4m3fn values, ascending (as float64)."""
    codes = torch.arange(0, 0x7F, dtype=torch.uint8)  # 0x00..0x7e
    return codes.view(torch.float8_e4m3fn).float().double()


def fp8_inputs(gen):
    vals = fp8_values()
    mids = (vals[1:] + vals[:-1]) / 2  # exact ties (representable in fp32)
    ties = torch.cat([mids, -mids]).to(torch.float32)
    up = torch.nextafter(ties, torch.full_like(ties, math.inf))
    down = torch.nextafter(ties, torch.full_like(ties, -math.inf))
    exact = torch.cat([vals, -vals]).to(torch.float32)
    # log-uniform magnitudes 2^-14 .. 2^10 with random signs
    e = torch.rand(2000, generator=gen, dtype=torch.float64) * 24 - 14
    sign = torch.where(torch.rand(2000, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    logu = (sign * torch.pow(2.0, e)).to(torch.float32)
    unif = (torch.rand(800, generator=gen, dtype=torch.float64) * 1100 - 550).to(torch.float32)
    special = torch.tensor(
        [0.0, -0.0, 448.0, -448.0, 449.0, 456.0, 463.99, 464.0, -464.0, 464.01, 470.0, 479.99,
         480.0, 500.0, 1e4, 1e30, -1e30, math.inf, -math.inf, math.nan,
         2**-9, 2**-10, -(2**-10), 3 * 2**-11, 2**-11, 2**-12, 1e-30, 1e-45, 2**-6, 2**-6 - 2**-10,
         1.0625, 1.1875, 240.0, 248.0, 256.0, 272.0, 288.0],
        dtype=torch.float32)
    return torch.cat([special, exact, ties, up, down, logu, unif]).contiguous()


def nvfp4_cases(gen):
    cases = {}
    cases["randn_32x64"] = (torch.randn(32, 64, generator=gen) * 0.02).float()

    w = torch.randn(8, 160, generator=gen) * 0.05
    idx = torch.randint(0, w.numel(), (6,), generator=gen)
    w.view(-1)[idx] = torch.randn(6, generator=gen) * 3.0  # outliers
    cases["outliers_8x160"] = w.float()

    w = torch.randn(4, 64, generator=gen).float()
    w[1, 16:32] = 0.0                                          # an all-zero block
    w[2, 32:48] = torch.randn(16, generator=gen) * 1e-7        # block scale below the fp8 minimum
    w[3, 0:16] = torch.randn(16, generator=gen) * 2e-5         # subnormal fp8 block scales
    w[3, 48:64] = torch.randn(16, generator=gen) * 5e-6
    cases["zero_tiny_4x64"] = w

    cases["bf16_16x48"] = (torch.randn(16, 48, generator=gen) * 0.1).to(torch.bfloat16)

    # Exact ties: global amax 2688 * 2^-12 makes weight_scale_2 = 2^-12 exactly; the second row's
    # block amax 12 * 2^-12 gives the block scale 2.0, so w / (2 * 2^-12) hits every E2M1 bound.
    g = 2.0**-12
    row0 = torch.zeros(32)
    row0[0] = 2688 * g
    bounds = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0])
    row1 = torch.cat([bounds, -bounds, bounds * 0.5, torch.tensor([0.1, 7.0 / 2, 5.5, 6.0, 0, 0, 0, 0])])
    row1 = row1 * 2 * g
    cases["ties_2x32"] = torch.stack([row0, row1]).float()
    return cases


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_quant_fixtures.py OUTDIR")
    out = os.path.join(sys.argv[1], "quant")
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(20250604)
    have_cuda = torch.cuda.is_available()
    meta = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if have_cuda else None,
        "algorithm": "ModelOpt NVFP4QTensor dynamic path (nvfp4_tensor.py), scale clamp min 2^-9",
    }

    # FP8 E4M3
    x = fp8_inputs(gen)
    fp8 = {
        "decode_f32": torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).float(),
        "encode_in": x,
        "encode_cpu": x.to(torch.float8_e4m3fn).view(torch.uint8).contiguous(),
    }
    if have_cuda:
        enc = x.cuda().to(torch.float8_e4m3fn).view(torch.uint8).cpu().contiguous()
        fp8["encode_cuda"] = enc
        meta["fp8_cuda_matches_cpu"] = bool(torch.equal(enc, fp8["encode_cpu"]))
        meta["fp8_cuda_mismatch_inputs"] = [repr(float(v)) for v in x[enc != fp8["encode_cpu"]][:50]]
    save_file(fp8, os.path.join(out, "fp8_e4m3.safetensors"))
    meta["fp8_count"] = int(x.numel())

    # NVFP4
    tensors = {}
    meta["nvfp4_cases"] = {}
    for name, w in nvfp4_cases(gen).items():
        r = quantize(w, "cpu")
        tensors[f"{name}.input"] = w.contiguous()
        for k, v in r.items():
            tensors[f"{name}.{k}"] = v
        info = {"shape": list(w.shape), "dtype": str(w.dtype)}
        if have_cuda:
            # The GPU result is kept too: torch on CUDA divides by a Python scalar as a multiply by
            # its fp32 reciprocal, so weight_scale_2 can differ from the CPU's in the last bit.
            rc = quantize(w, "cuda")
            for k in ("weight", "weight_scale", "weight_scale_2"):
                tensors[f"{name}.cuda.{k}"] = rc[k]
            info["cuda_matches_cpu"] = all(
                torch.equal(rc[k].view(torch.uint8) if rc[k].dtype == torch.float8_e4m3fn else rc[k],
                            r[k].view(torch.uint8) if r[k].dtype == torch.float8_e4m3fn else r[k])
                for k in ("weight", "weight_scale", "weight_scale_2"))
        meta["nvfp4_cases"][name] = info
    save_file(tensors, os.path.join(out, "nvfp4.safetensors"))

    # ModelOpt on an all-zero tensor: the global scale is 0, 0 / (6 * 0) is NaN, and NaN is not
    # caught by the "== 0 -> 1.0" rule, so the block scales are cast to NaN (recorded, not used).
    z = quantize(torch.zeros(2, 32), "cpu")
    meta["all_zero_tensor"] = {
        "weight_scale_2": float(z["weight_scale_2"]),
        "weight_scale_bytes": z["weight_scale"].view(torch.uint8).flatten().tolist(),
        "weight_bytes": z["weight"].flatten().tolist(),
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    print(json.dumps(meta, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
