#!/usr/bin/env python3
"""PyTorch fp16 F.linear baseline for `deno task bench kernels`: y = x W^T at the Llama linear shapes and batch
sizes, timed with CUDA events around many calls that rotate through enough weight copies (>= 256 MiB) to keep
them out of L2, median of several runs. Prints a table and writes JSON to --out.

Usage: python3 bench/baseline_torch_linear.py --shapes 4096x4096,11008x4096 --tokens 1,16,64 [--out FILE]
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F


def time_linear(m, n, tokens, reps=200, trials=7):
    dev = "cuda"
    bytes_per = m * n * 2
    copies = max(2, min(64, -(-(256 << 20) // bytes_per)))
    ws = [torch.randn(m, n, device=dev, dtype=torch.float16) * n ** -0.5 for _ in range(copies)]
    x = torch.randn(tokens, n, device=dev, dtype=torch.float16)
    for _ in range(3):
        for w in ws:
            F.linear(x, w)
    torch.cuda.synchronize()
    times = []
    for _ in range(trials):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for r in range(reps):
            F.linear(x, ws[r % copies])
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / reps * 1e3)  # us per call
    return statistics.median(times), copies


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="4096x4096,11008x4096,4096x11008,14336x4096,4096x14336")
    ap.add_argument("--tokens", default="1")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    rows = []
    for shape in a.shapes.split(","):
        m, n = (int(v) for v in shape.split("x"))
        for t in (int(v) for v in a.tokens.split(",")):
            us, copies = time_linear(m, n, t)
            row = {"m": m, "n": n, "tokens": t, "us": us, "gbps": m * n * 2 / (us * 1e-6) / 1e9,
                   "tflops": 2 * t * m * n / (us * 1e-6) / 1e12, "copies": copies}
            rows.append(row)
            print(f"torch F.linear fp16 {m}x{n} M={t}: {us:.1f} us, {row['gbps']:.0f} GB/s, "
                  f"{row['tflops']:.2f} TFLOP/s", file=sys.stderr)
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}
    print(json.dumps(result, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
