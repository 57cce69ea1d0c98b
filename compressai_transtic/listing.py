"""``compressai-transtic models``: what the zoo offers and what this machine holds.

One line per released weights file (zoo name, quality, task, training lambda, present
in the torch hub cache or missing, and how its content is verified), the cache folder,
and whether each traditional codec of the evaluator can run here. ``--pin`` and
``--forget`` manage the recorded hashes of :mod:`compressai_transtic.trust`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

from . import zoo
from .console import report_error, shorten
from .evaluation.traditional import TRADITIONAL_CODECS, CodecUnavailableError, check_available, codec_version
from .trust import HashSource, TrustStore

__all__ = ["add_models_arguments", "model_rows", "run_models"]


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic models``."""
    parser.description = (
        "The released weights (zoo name, quality, task, lambda; present in the torch hub "
        "cache or missing) and the traditional codecs that can run here."
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    hashes = parser.add_mutually_exclusive_group()
    hashes.add_argument(
        "--pin",
        nargs=2,
        metavar=("FILE", "SHA256"),
        help="verify a weights file of the cache against this sha256 from now on (as if the manifest held it)",
    )
    hashes.add_argument(
        "--forget",
        metavar="FILE",
        help="forget the sha256 recorded for a weights file (after "
        "replacing it on purpose); the next use records the new file's",
    )


def model_rows() -> List[Dict[str, Any]]:
    """One dict per released weights file, with its cache path and whether it is there."""
    rows = []
    records: Dict[Path, Dict[str, Any]] = {}  # per cache folder, read once
    for w in zoo.weights:
        path = w.cache_path
        if path.parent not in records:
            records[path.parent] = TrustStore(path.parent).records()
        record = None if w.sha256 else records[path.parent].get(w.filename)
        if w.sha256:
            check = "manifest sha256"
        elif record is None:
            check = "first use will record its sha256"
        else:
            check = (
                "pinned sha256" if record.source is HashSource.USER else f"sha256 of its first use {record.since[:10]}"
            )
        rows.append(
            {
                "name": w.name,
                "quality": w.quality,
                "task": w.task,
                "lambda": w.lmbda,
                "file": w.filename,
                "url": w.url,
                "path": str(path),
                "present": path.is_file(),
                "sha256": w.sha256 or (record.sha256 if record else None),
                "verified_by": check,
            }
        )
    return rows


def _manage_hashes(args: argparse.Namespace, cache: Path) -> str:
    """``--pin`` / ``--forget``: the line that says what was done."""
    name = args.forget if args.forget is not None else args.pin[0]
    if name not in {w.filename for w in zoo.weights}:
        raise ValueError(
            f"{shorten(name)!r} is not a released weights file; see the file column of compressai-transtic models"
        )
    store = TrustStore(cache)
    if args.forget is not None:
        forgotten = store.forget(name)
        return f"forgot the sha256 of {name}" if forgotten else f"no sha256 was recorded for {name}"
    record = store.record(name, args.pin[1], source=HashSource.USER)
    return f"pinned {name} to sha256 {record.sha256} in {store.path}"


def _codec_rows() -> List[Dict[str, Any]]:
    rows = []
    for name, info in TRADITIONAL_CODECS.items():
        try:
            check_available(name)
            status = "available" + (f" ({codec_version(name)})" if codec_version(name) else "")
        except CodecUnavailableError as err:
            status = f"unavailable: {err}"
        rows.append({"name": name, "title": info.title, "parameter": info.parameter, "status": status})
    return rows


def run_models(args: argparse.Namespace) -> int:
    """Run ``compressai-transtic models``."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        if args.pin or args.forget is not None:
            print(_manage_hashes(args, cache))
            return 0
        models = model_rows()
    except (ValueError, OSError) as err:  # TrustStoreError, OutputError: the message names the file
        return report_error(err)
    codecs = _codec_rows()
    if args.json:
        json.dump({"cache": str(cache), "weights": models, "codecs": codecs}, sys.stdout, indent=1)
        print()
        return 0
    present = sum(r["present"] for r in models)
    print(f"released weights ({present} of {len(models)} in {cache}):")
    print(f"  {'name':<14}{'quality':>8}  {'lambda':>8}  {'file':<22}{'status':<9}verified by")
    for r in models:
        lmbda = "-" if r["lambda"] is None else f"{r['lambda']:g}"
        status = "present" if r["present"] else "missing"
        print(f"  {r['name']:<14}{r['quality']:>8}  {lmbda:>8}  {r['file']:<22}{status:<9}{r['verified_by']}")
    print("traditional codecs (compressai-transtic eval -a NAME):")
    for r in codecs:
        print(f"  {r['name']:<10}{r['status']}")
    return 0
