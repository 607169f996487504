#!/usr/bin/env python3
"""Summarises the decode steps of an Nsight Systems trace (sqlite export, scripts/trace_step.sh).

A step starts at each embedding kernel. For the last steps of the trace: the step's span (first
kernel start to last kernel end), and per kernel kind: launches, mean duration, and the time the
kind adds to the step: for each kernel, end - max(start, end of the kernel before it), so that
overlapped work (programmatic dependent launch) counts once and the gaps count where they fall.
    trace_summary.py TRACE.sqlite [STEPS]     (STEPS: how many of the last steps, default 8)
"""
import sqlite3
import sys
from collections import defaultdict

KINDS = [  # (substring of the demangled name, label), first match wins
    ("GemvMulti", "GEMV q/k/v"),
    ("GemvSwiglu", "GEMV gate/up + SwiGLU"),
    ("GemvResidual", "GEMV o / down + residual"),
    ("GemvLinear", "GEMV head"),
    ("embedding", "embedding"),
    ("rope", "q/k norm + RoPE + KV write"),
    ("combine", "split-KV combine"),
    ("attention", "attention"),
    ("attn", "attention"),
    ("rmsnorm", "final RMSNorm"),
    ("sample", "sampling"),
    ("argmax", "sampling"),
]


def kind(name):
    for key, label in KINDS:
        if key.lower() in name.lower():
            return label
    return name[:60]


def main():
    db = sqlite3.connect(sys.argv[1])
    last = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    rows = db.execute(
        "SELECT k.start, k.end, s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k "
        "JOIN StringIds s ON k.demangledName = s.id ORDER BY k.start").fetchall()
    steps, cur = [], []
    for r in rows:
        if kind(r[2]) == "embedding" and cur:
            steps.append(cur)
            cur = []
        cur.append(r)
    if cur:
        steps.append(cur)
    steps = [s for s in steps if len(s) > 50][-last:]  # decode steps (the prefill is one step too)
    if not steps:
        print("no decode steps found")
        return
    add, dur, cnt = defaultdict(float), defaultdict(float), defaultdict(int)
    span = 0.0
    for s in steps:
        span += s[-1][1] - s[0][0]
        prev_end = s[0][0]
        for start, end, name in s:
            k = kind(name)
            add[k] += max(0, end - max(start, prev_end))
            dur[k] += end - start
            cnt[k] += 1
            prev_end = max(prev_end, end)
    n = len(steps)
    print(f"{n} decode steps, mean span {span / n / 1e3:.1f} us, {len(steps[-1])} kernels per step")
    print(f"{'kernel':34} {'per step':>8} {'mean us':>8} {'adds us/step':>13} {'share':>6}")
    for k in sorted(add, key=lambda k: -add[k]):
        print(f"{k:34} {cnt[k] / n:8.0f} {dur[k] / cnt[k] / 1e3:8.2f} {add[k] / n / 1e3:13.1f} "
              f"{100 * add[k] / span:5.1f}%")
    gaps = span - sum(add.values())
    print(f"{'(idle between kernels)':34} {'':8} {'':8} {gaps / n / 1e3:13.1f} {100 * gaps / span:5.1f}%")


if __name__ == "__main__":
    main()
