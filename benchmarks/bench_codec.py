"""Speed and memory of TIC / TransTIC on this machine (run by hand, not in CI).

Measures, in one run:

* this machine's fp32 matrix-multiply peak with the chosen thread count: the median
  of a few 2048^3 products, measured right before and right after every timed
  repetition (shared machines drift by tens of percent within minutes, so every
  timing is set against the mean of the two peaks around it);
* for each model: median wall time of ``forward`` / ``compress`` / ``decompress`` at the
  chosen size (random weights, entropy tables built), the multiply-accumulates each
  performs (true counting, see :mod:`compressai_transtic.complexity`), the achieved
  GFLOP/s (2 FLOPs per MAC) as a share of the matmul peak (the median over the
  repetitions of each one's share of its own peak), and the peak resident memory of
  a fresh process doing that operation.

Prints a table and writes JSON::

    python benchmarks/bench_codec.py --size 512 768 --threads 2 --json benchmarks/results.json

Every (model, operation) runs in its own subprocess so that peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

OPS = ("forward", "compress", "decompress")


def matmul_peak(threads: int, n: int = 2048, repeat: int = 7) -> float:
    """Median fp32 GFLOP/s of an n x n x n matrix product (the machine's practical peak).

    The median, not the best run: shared machines drift, and every model timing is
    set against the peaks measured right before and after it in the same process.
    """
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    rates = []
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def worker(
    model_name: str, op: str, height: int, width: int, threads: int, repeat: int, cpu_attention: str = "auto"
) -> Dict[str, Any]:
    """Time one operation in this (fresh) process; returns timings, MACs and peak RSS."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    from compressai_transtic.complexity import count_macs
    from compressai_transtic.layers import set_cpu_attention
    from compressai_transtic.models import TIC, TransTIC

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    set_cpu_attention(cpu_attention)
    model = (TIC() if model_name == "tic" else TransTIC()).eval()
    model.update(force=True)
    x = torch.rand(1, 3, height, width)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.no_grad():
        if op == "decompress":
            enc = model.compress(x)
            fn = lambda: model.decompress(enc["strings"], enc["shape"])  # noqa: E731
        elif op == "compress":
            fn = lambda: model.compress(x)  # noqa: E731
        else:
            fn = lambda: model(x)  # noqa: E731
        fn()  # warm-up: builds masks and indices for this size
        times: List[float] = []
        samples = [matmul_peak(threads)]
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            samples.append(matmul_peak(threads))
    macs = count_macs(fn, "true")
    peaks = [(a + b) / 2 for a, b in zip(samples, samples[1:])]  # right before and right after
    shares = [2 * macs / t / 1e9 / p for t, p in zip(times, peaks)]
    return {
        "matmul_peak_gflops": statistics.median(peaks),
        "model": model_name,
        "op": op,
        "cpu_attention": cpu_attention,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "seconds": statistics.median(times),
        "all_seconds": times,
        "all_peaks_gflops": peaks,
        "share_of_peak": statistics.median(shares),
        "all_shares": shares,
        "macs": macs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_build_mb": rss_model,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 768), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["tic", "transtic"], choices=["tic", "transtic"])
    parser.add_argument(
        "--cpu-attention",
        default="auto",
        choices=["auto", "packed", "sdpa"],
        help="CPU attention implementation (see compressai_transtic.layers.set_cpu_attention)",
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "OP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    h, w = args.size

    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], h, w, args.threads, args.repeat, args.cpu_attention)))
        return 0

    rows = []
    for model in args.models:
        for op in OPS:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                model,
                op,
                "--size",
                str(h),
                str(w),
                "--threads",
                str(args.threads),
                "--repeat",
                str(args.repeat),
                "--cpu-attention",
                args.cpu_attention,
            ]
            env = dict(os.environ)
            root = str(Path(__file__).resolve().parents[1])
            env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["gflops"] = 2 * row["macs"] / row["seconds"] / 1e9
            rows.append(row)
            print(f"  {model:<9} {op:<10} {row['seconds']:.2f} s", file=sys.stderr)

    if rows:
        print(f"torch {rows[0]['torch']}, CPU capability {rows[0]['cpu_capability']}")
    header = (
        f"{'model':<9} {'op':<10} {'seconds':>8} {'GMACs':>7} {'GFLOP/s':>8} {'peak':>6} {'% peak':>7} "
        f"{'peak RSS MB':>12}"
    )
    print(
        f"input {h}x{w}, {args.threads} threads, CPU attention {args.cpu_attention}; peak = median fp32 "
        "2048^3 matmul GFLOP/s around each repetition; % peak = median of each repetition's share of its peak"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<9} {r['op']:<10} {r['seconds']:>8.2f} {r['macs'] / 1e9:>7.1f} {r['gflops']:>8.1f} "
            f"{r['matmul_peak_gflops']:>6.1f} {100 * r['share_of_peak']:>6.1f}% {r['peak_rss_mb']:>12.0f}"
        )
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "threads": args.threads,
        "cpu_attention": args.cpu_attention,
        "size": [h, w],
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(args.json.parent), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
