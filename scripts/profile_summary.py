#!/usr/bin/env python3
"""Summarise an `ncu --csv --print-units base` report: per kernel (name shortened), launches, total
time, share of the step, DRAM bytes and achieved GB/s, and the sum of kernel times (the step's
time with no launch gaps)."""
import csv
import re
import sys
from collections import defaultdict


def short(name):
    name = re.sub(r"\(.*", "", name)           # drop the argument list
    name = re.sub(r"^(void )?", "", name)
    return name.split("::")[-1][:60]


def main(path):
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu prints its own log lines first
    for r in csv.DictReader(lines):
        rows.append(r)
    if not rows:
        print(f"{path}: no kernels profiled")
        return
    per = defaultdict(lambda: {"n": 0, "ns": 0.0, "rd": 0.0, "wr": 0.0})
    seen = set()
    for r in rows:
        key = (r["ID"], r["Metric Name"])
        if key in seen:
            continue
        seen.add(key)
        k = per[short(r["Kernel Name"])]
        v = float(r["Metric Value"].replace(",", ""))
        if r["Metric Name"] == "gpu__time_duration.sum":
            k["n"] += 1
            k["ns"] += v
        elif r["Metric Name"] == "dram__bytes_read.sum":
            k["rd"] += v
        elif r["Metric Name"] == "dram__bytes_write.sum":
            k["wr"] += v
    total = sum(k["ns"] for k in per.values())
    print(f"{'kernel':<60} {'launches':>8} {'us':>9} {'share':>6} {'MB':>9} {'GB/s':>7}")
    for name, k in sorted(per.items(), key=lambda kv: -kv[1]["ns"]):
        mb = (k["rd"] + k["wr"]) / 1e6
        gbps = (k["rd"] + k["wr"]) / k["ns"] if k["ns"] else 0
        print(f"{name:<60} {k['n']:>8} {k['ns']/1e3:>9.1f} {100*k['ns']/total:>5.1f}% {mb:>9.1f} {gbps:>7.0f}")
    print(f"{'sum of kernel times':<60} {sum(k['n'] for k in per.values()):>8} {total/1e3:>9.1f}")


if __name__ == "__main__":
    main(sys.argv[1])
