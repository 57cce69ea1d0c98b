"""Speed and memory of TIC / TransTIC on this machine (run by hand, not in CI).

Measures, in one run:

* this machine's fp32 matrix-multiply peak with the chosen thread count: the median
  of a few 2048^3 products, measured right before and right after every timed
  repetition (shared machines drift by tens of percent within minutes, so every
  timing is set against the mean of the two peaks around it);
* for each model: median wall time of ``forward`` / ``compress`` / ``decompress`` at the
  chosen size (random weights, entropy tables built), the multiply-accumulates of its
  layers (true counting, see :mod:`compressai_transtic.complexity`; layers that
  inference computes in another form count as built: BatchNorms folded into
  convolutions as layers, the sub-pixel form of the last transposed convolution as
  that convolution, which leaves out about 1 kMAC per pixel that runs), the achieved
  GFLOP/s (2 FLOPs per MAC) as a share of the matmul peak (the median over the
  repetitions of each one's share of its own peak), the peak resident memory of
  a fresh process doing that operation (before its MACs are counted), and the minor
  page faults of one call (fresh memory that the kernel maps in, page by page).

* with ``--batch``: images per second of ``forward`` / ``compress`` on batches of equal-size
  images (the ImageNet protocol codes 256x256 crops), against batch 1 (``x b1``);
* with ``--baseline REV``: every measurement of the package of that git revision too,
  right before this checkout's, and the speed-up against it (``x base``).

The CPU's model name and vector extensions (AVX2, AVX-512, AMX) head the table:
attention and GELU kernels, and so the share of peak, differ between CPU classes.
``--isa avx2`` runs the workers with every library's vector code limited to AVX2
(PyTorch's kernels, oneDNN's convolutions, MKL's products): an AVX2 CPU's code on
this CPU's cores and caches, for a machine with AVX-512 and no AVX2-only machine at
hand. The table says so in its heading.

Every map that PyTorch allocates afresh on the CPU is paid for in page faults as it
is first written (glibc gives blocks above 32 MB back to the system when they are
freed). ``--huge-pages`` runs the workers with PyTorch's ``THP_MEM_ALLOC_ENABLE=1``,
which puts large allocations on 2 MB transparent huge pages: one fault where there
were 512 (where the kernel's transparent-huge-page mode is ``madvise`` or
``always``, shown in the heading).

Prints a table and writes JSON::

    python benchmarks/bench_codec.py --size 512 768 --threads 2 --json benchmarks/results.json
    python benchmarks/bench_codec.py --size 1024 1536 --size 2160 3840 --repeat 1   # peak memory
    python benchmarks/bench_codec.py --size 256 256 --batch 1 8 32 --ops forward compress

Every (model, operation, size, batch) runs in its own subprocess so that peak memory is its own;
``decompress`` decodes strings that another subprocess coded.
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
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]

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


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")

#: environment that limits each library's CPU dispatch to an instruction set; read
#: when the libraries load, so set for the worker processes only
ISA_LIMITS: Dict[str, Dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}

#: PyTorch's switch for CPU allocations on transparent huge pages (blocks of 2 MB and
#: more are aligned to them and advised with MADV_HUGEPAGE); read at the first
#: allocation, so set for the worker processes only
HUGE_PAGES = "THP_MEM_ALLOC_ENABLE"


def isa_limits(isa: str) -> Dict[str, str]:
    """The variables of :data:`ISA_LIMITS` in force for the workers: those of ``isa``
    over any that the caller's environment already sets."""
    inherited = {name: os.environ[name] for names in ISA_LIMITS.values() for name in names if name in os.environ}
    return {**inherited, **ISA_LIMITS[isa]}


def worker_environment(args: argparse.Namespace) -> Dict[str, str]:
    """The variables that the benchmark sets for its workers: the ISA limits, and
    :data:`HUGE_PAGES` with ``--huge-pages`` (else the caller's, if set)."""
    env = isa_limits(args.isa)
    if args.huge_pages:
        env[HUGE_PAGES] = "1"
    elif HUGE_PAGES in os.environ:
        env[HUGE_PAGES] = os.environ[HUGE_PAGES]
    return env


def kernel_huge_pages() -> str:
    """The kernel's transparent-huge-page mode (``always``, ``madvise``, ``never``), or
    ``unknown`` where the system does not say (Linux only)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="utf-8") as f:
            words = f.read().split()
    except OSError:
        return "unknown"
    chosen = [w[1:-1] for w in words if w.startswith("[") and w.endswith("]")]
    return chosen[0] if chosen else "unknown"


def cpu_description() -> Dict[str, Any]:
    """The CPU's model name and the vector extensions it reports (Linux ``/proc/cpuinfo``)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags], "cpus": os.cpu_count()}


def build_model(model_name: str, threads: int, cpu_attention: Optional[str]) -> Any:
    """The model of every worker: random weights from seed 0 (so that two processes build
    the same codec), entropy tables built, in eval mode."""
    import warnings

    # CompressAI's import-time jit warning, spelled here: a baseline revision may not
    # define the package's own pattern
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    import torch

    from compressai_transtic.models import TIC, TransTIC

    torch.set_num_threads(threads)
    set_attention(cpu_attention)
    torch.manual_seed(0)
    model = (TIC() if model_name == "tic" else TransTIC()).eval()
    model.update(force=True)
    return model


def set_attention(choice: Optional[str]) -> None:
    """``set_cpu_attention(choice)`` where the package under test has it (a baseline
    revision may predate it)."""
    try:
        from compressai_transtic.layers import set_cpu_attention
    except ImportError:
        return
    set_cpu_attention(choice)


def attention_in_force() -> Dict[str, str]:
    """The CPU attention setting and the implementation it runs ("unknown" where the
    package under test does not say)."""
    import torch

    try:
        from compressai_transtic.layers import cpu_attention
        from compressai_transtic.layers.attention import attention_backend
    except ImportError:
        return {"cpu_attention": "unknown", "cpu_attention_backend": "unknown"}
    return {
        "cpu_attention": cpu_attention(),
        "cpu_attention_backend": attention_backend(torch.device("cpu")).value,
    }


def input_batch(batch: int, height: int, width: int) -> Any:
    """The images every worker codes: uniform noise from seed 1."""
    import torch

    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


def write_strings(
    model_name: str, height: int, width: int, threads: int, cpu_attention: Optional[str], batch: int, target: Path
) -> None:
    """Compress the benchmark's images and write the strings to ``target`` (hex, JSON),
    for a decompress worker: its peak memory is then decompression's own. The same
    package and attention setting as the worker, so that both compute the same scales."""
    import torch

    model = build_model(model_name, threads, cpu_attention)
    with torch.no_grad():
        enc = model.compress(input_batch(batch, height, width))
    strings = [[s.hex() for s in level] for level in enc["strings"]]
    target.write_text(json.dumps({"strings": strings, "shape": list(enc["shape"])}))


def read_strings(source: Path) -> Dict[str, Any]:
    data = json.loads(source.read_text())
    return {"strings": [[bytes.fromhex(s) for s in level] for level in data["strings"]], "shape": data["shape"]}


def worker(
    model_name: str,
    op: str,
    height: int,
    width: int,
    threads: int,
    repeat: int,
    cpu_attention: Optional[str] = None,
    batch: int = 1,
    strings: Optional[Path] = None,
) -> Dict[str, Any]:
    """Time one operation in this (fresh) process; returns timings, MACs and peak RSS.
    ``decompress`` decodes the strings that another process wrote to ``strings``."""
    import torch

    from compressai_transtic.complexity import count_macs

    model = build_model(model_name, threads, cpu_attention)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    x = input_batch(batch, height, width) if op != "decompress" else None
    with torch.no_grad():
        if op == "decompress":
            if strings is None:
                raise ValueError("a decompress worker needs the strings of a compress worker")
            enc = read_strings(strings)
            fn = lambda: model.decompress(enc["strings"], enc["shape"])  # noqa: E731
        elif op == "compress":
            fn = lambda: model.compress(x)  # noqa: E731
        else:
            fn = lambda: model(x)  # noqa: E731
        fn()  # warm-up: builds masks and indices for this size
        times: List[float] = []
        faults: List[int] = []
        samples = [matmul_peak(threads)]
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            samples.append(matmul_peak(threads))
    # the operation's own peak: counting below runs the layers as built (whole-map
    # prompt generator, unfolded BatchNorms), which takes more memory than inference
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    macs = count_macs(fn, "true", model)
    peaks = [(a + b) / 2 for a, b in zip(samples, samples[1:])]  # right before and right after
    shares = [2 * macs / t / 1e9 / p for t, p in zip(times, peaks)]
    return {
        "matmul_peak_gflops": statistics.median(peaks),
        "model": model_name,
        "op": op,
        "size": [height, width],
        "batch": batch,
        "images_per_second": batch / statistics.median(times),
        **attention_in_force(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "seconds": statistics.median(times),
        "all_seconds": times,
        "all_peaks_gflops": peaks,
        "share_of_peak": statistics.median(shares),
        "all_shares": shares,
        "macs": macs,
        "peak_rss_mb": peak_rss,
        "page_faults": statistics.median(faults),
        "rss_after_build_mb": rss_model,
    }


def run_worker(
    args: argparse.Namespace, model: str, op: str, size: Sequence[int], batch: int, package: Path = ROOT
) -> Dict[str, Any]:
    """One measurement in a fresh interpreter (its peak memory is its own), of the package
    in the checkout ``package``; a decompress measurement first has another fresh
    interpreter compress its input."""
    with tempfile.TemporaryDirectory() as folder:
        strings = Path(folder) / "strings.json"
        if op == "decompress":
            _run(args, [model, "strings", "--strings", str(strings)], size, batch, package)
        out = _run(args, [model, op, "--strings", str(strings)], size, batch, package)
    row = json.loads(out.strip().splitlines()[-1])
    row["gflops"] = 2 * row["macs"] / row["seconds"] / 1e9
    return row


def _run(args: argparse.Namespace, worker: List[str], size: Sequence[int], batch: int, package: Path) -> str:
    """Run this script as a worker with the package of ``package``; returns its output."""
    cmd = [sys.executable, __file__, "--worker", *worker, "--size", str(size[0]), str(size[1])]
    cmd += ["--threads", str(args.threads), "--repeat", str(args.repeat), "--cpu-attention", args.cpu_attention]
    cmd += ["--batch", str(batch)]
    env = dict(os.environ, **worker_environment(args))
    env["PYTHONPATH"] = str(package) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        code = "this checkout" if package == ROOT else f"the baseline ({package})"
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"a worker of {code} failed, exit status {done.returncode}: {' '.join(worker)}\n{tail}")
    return done.stdout


def _backends(rows: List[Dict[str, Any]]) -> str:
    """`` (packed)``: the implementation that the workers' choice ran on this CPU."""
    found = sorted({r["cpu_attention_backend"] for r in rows if "cpu_attention_backend" in r})
    return f" ({', '.join(found)})" if found else ""


def print_table(rows: List[Dict[str, Any]], cpu: Dict[str, Any], args: argparse.Namespace) -> None:
    _print_heading(rows, cpu, args)
    header = (
        f"{'code':<8} {'model':<9} {'op':<10} {'size':>10} {'batch':>5} {'seconds':>8} {'img/s':>7} {'x b1':>5} "
        f"{'GMACs':>8} {'GFLOP/s':>8} {'peak':>6} {'% peak':>7} {'x base':>6} {'peak RSS MB':>12} {'faults/op':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        size = "x".join(str(v) for v in r["size"])
        print(
            f"{r['code']:<8.8} {r['model']:<9} {r['op']:<10} {size:>10} {r['batch']:>5} {r['seconds']:>8.2f} "
            f"{r['images_per_second']:>7.2f} {_ratio(r.get('vs_batch_1')):>5} {r['macs'] / 1e9:>8.1f} "
            f"{r['gflops']:>8.1f} {r['matmul_peak_gflops']:>6.1f} {100 * r['share_of_peak']:>6.1f}% "
            f"{_ratio(r.get('speedup_vs_baseline')):>6} {r['peak_rss_mb']:>12.0f} {r['page_faults']:>10.0f}"
        )


def _ratio(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2f}"


def _print_heading(rows: List[Dict[str, Any]], cpu: Dict[str, Any], args: argparse.Namespace) -> None:
    isa = ", ".join(cpu["isa"]) or "none of " + ", ".join(ISA_FLAGS)
    print(f"CPU: {cpu['model']} ({cpu['cpus']} logical CPUs; {isa})")
    limits = isa_limits(args.isa)
    if limits:
        print("vector code limited on this CPU: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
    if rows:
        print(f"torch {rows[0]['torch']}, CPU capability {rows[0]['cpu_capability']}")
    huge = worker_environment(args).get(HUGE_PAGES, "0") not in ("", "0")
    print(
        f"PyTorch CPU allocations on huge pages ({HUGE_PAGES}): {'on' if huge else 'off'}; "
        f"kernel transparent huge pages: {kernel_huge_pages()}"
    )
    print(
        f"{args.threads} threads, CPU attention {args.cpu_attention}{_backends(rows)}; "
        "peak = median fp32 2048^3 matmul GFLOP/s around each repetition; "
        "% peak = median of each repetition's share of its peak"
    )
    print("x b1 = images/s against batch 1 of the same code, model, operation and size")
    if args.baseline:
        print(
            f"baseline = the package of {args.baseline} ({commit_of(args.baseline)}), current = this checkout's; "
            "x base = baseline seconds / current seconds (above 1: faster than the baseline)"
        )


def commit_of(revision: str) -> str:
    """The commit that ``revision`` names in this repository ("unknown commit" where git
    cannot say)."""
    try:
        found = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", revision], capture_output=True, text=True
        )
    except OSError:
        return "unknown commit"
    return found.stdout.strip() or "unknown commit"


def checkout(revision: str, folder: Path) -> Path:
    """The files of ``revision`` of this repository, extracted under ``folder`` (no
    worktree is registered): the package of a baseline measurement.

    Raises:
        SystemExit: git cannot read the revision (the message says which).
    """
    target = folder / "baseline"
    target.mkdir()
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision], capture_output=True)
    except OSError as err:
        raise SystemExit(f"--baseline needs git, which cannot run here: {err}") from None
    if archive.returncode != 0:
        raise SystemExit(
            f"--baseline {revision}: git cannot read it ({archive.stderr.decode(errors='replace').strip()}); name a "
            "commit, tag or branch of this repository (git fetch it first if it is elsewhere)"
        )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def measure(args: argparse.Namespace, sizes: Sequence[Sequence[int]], codes: Dict[str, Path]) -> List[Dict[str, Any]]:
    """Every (size, model, operation, batch) for every code (baseline first, then this
    checkout, one after the other so that both see the same phase of a drifting
    machine), each row marked with its code and ratios."""
    rows = []
    for size in sizes:
        for model in args.models:
            for op in args.ops:
                for batch in args.batch:
                    for code, package in codes.items():
                        row = dict(run_worker(args, model, op, size, batch, package), code=code)
                        rows.append(row)
                        print(
                            f"  {code:<8.8} {model:<9} {op:<10} {size} x{batch} {row['seconds']:.2f} s", file=sys.stderr
                        )
    _add_ratios(rows)
    return rows


def _add_ratios(rows: List[Dict[str, Any]]) -> None:
    """``vs_batch_1``: images/s against batch 1 of the same code, model, op and size;
    ``speedup_vs_baseline``: the baseline's seconds over this checkout's."""

    def key(r: Dict[str, Any], **changes: Any) -> tuple:
        r = {**r, **changes}
        return (r["code"], r["model"], r["op"], tuple(r["size"]), r["batch"])

    by_key = {key(r): r for r in rows}
    for r in rows:
        single = by_key.get(key(r, batch=1))
        if single is not None and r["batch"] != 1:
            r["vs_batch_1"] = r["images_per_second"] / single["images_per_second"]
        base = by_key.get(key(r, code="baseline"))
        if base is not None and r["code"] != "baseline":
            r["speedup_vs_baseline"] = base["seconds"] / r["seconds"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size", type=int, nargs=2, action="append", metavar=("H", "W"), help="repeatable (default: 512 768)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="intra-op threads of every measuring process (default 2)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed calls per operation after one warm-up; the median is shown (default 3)",
    )
    parser.add_argument(
        "--models", nargs="+", default=["tic", "transtic"], choices=["tic", "transtic"], help="default: both"
    )
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS, help="operations to time (default: all)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="images per call (equal size)")
    parser.add_argument(
        "--cpu-attention",
        choices=["auto", "packed", "sdpa"],
        help="CPU attention implementation (see compressai_transtic.layers.set_cpu_attention; "
        "default: the environment's COMPRESSAI_TRANSTIC_CPU_ATTENTION, else auto)",
    )
    parser.add_argument(
        "--isa",
        default="native",
        choices=sorted(ISA_LIMITS),
        help="limit the libraries' vector code to this instruction set (an AVX2 CPU's code on an AVX-512 one)",
    )
    parser.add_argument(
        "--huge-pages",
        action="store_true",
        help=f"run the workers with {HUGE_PAGES}=1: PyTorch's large CPU allocations on transparent huge pages",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also measure the package of this git revision (a commit, tag or branch of this checkout), each "
        "measurement right before this checkout's, and show the speed-up against it",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("benchmarks/results.json"),
        help="file to write the results to, relative to the current folder (default: benchmarks/results.json)",
    )
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "OP"), help=argparse.SUPPRESS)
    parser.add_argument("--strings", type=Path, help=argparse.SUPPRESS)
    return parser


def run_as_worker(args: argparse.Namespace, size: Sequence[int]) -> None:
    """``--worker MODEL OP``: one measurement (``OP`` ``strings``: the input of a
    decompress measurement), printed as JSON."""
    (h, w), (model, op) = size, args.worker
    if op == "strings":
        write_strings(model, h, w, args.threads, args.cpu_attention, args.batch[0], args.strings)
    else:
        row = worker(model, op, h, w, args.threads, args.repeat, args.cpu_attention, args.batch[0], args.strings)
        print(json.dumps(row))


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    sizes = args.size or [(512, 768)]
    if args.worker:
        run_as_worker(args, sizes[0])
        return 0

    cpu = cpu_description()
    if args.isa != "native" and args.isa not in cpu["isa"]:
        parser.error(f"--isa {args.isa}: this CPU ({cpu['model']}) does not report {args.isa}")
    sys.path.insert(0, str(ROOT))  # the checkout's package, installed or not
    from compressai_transtic.fileio import atomic_write_text, check_writable_folder
    from compressai_transtic.layers import cpu_attention

    if args.cpu_attention is None:  # the workers are told explicitly what the default is here
        try:
            args.cpu_attention = cpu_attention()
        except ValueError as err:
            parser.error(str(err))
    check_writable_folder(args.json.parent, "benchmark result")  # before a long run
    with tempfile.TemporaryDirectory() as folder:
        codes = {"baseline": checkout(args.baseline, Path(folder))} if args.baseline else {}
        rows = measure(args, sizes, {**codes, "current": ROOT})
    print_table(rows, cpu, args)
    result = {
        "machine": {"platform": platform.platform(), "cpu": cpu},
        "threads": args.threads,
        "cpu_attention": args.cpu_attention,
        "baseline": args.baseline,
        "baseline_commit": commit_of(args.baseline) if args.baseline else None,
        "isa_limit": isa_limits(args.isa),
        "worker_environment": worker_environment(args),
        "kernel_huge_pages": kernel_huge_pages(),
        "rows": rows,
    }
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
