"""``compressai-transtic models``: what the zoo offers and what this machine holds.

One line per released weights file (zoo name, quality, task, training lambda, present
in the torch hub cache or missing), the cache folder, and whether each traditional
codec of the evaluator can run here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

__all__ = ["add_models_arguments", "model_rows", "run_models"]


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic models``."""
    parser.description = ("The released weights (zoo name, quality, task, lambda; present in the torch hub "
                          "cache or missing) and the traditional codecs that can run here.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def model_rows() -> List[Dict[str, Any]]:
    """One dict per released weights file, with its cache path and whether it is there."""
    from . import zoo

    rows = []
    for w in zoo.weights:
        path = w.cache_path
        rows.append({"name": w.name, "quality": w.quality, "task": w.task, "lambda": w.lmbda, "file": w.filename,
                     "url": w.url, "path": str(path), "present": path.is_file()})
    return rows


def _codec_rows() -> List[Dict[str, Any]]:
    from .evaluation.traditional import TRADITIONAL_CODECS, CodecUnavailableError, check_available, codec_version

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
    import torch

    models, codecs = model_rows(), _codec_rows()
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if args.json:
        json.dump({"cache": str(cache), "weights": models, "codecs": codecs}, sys.stdout, indent=1)
        print()
        return 0
    present = sum(r["present"] for r in models)
    print(f"released weights ({present} of {len(models)} in {cache}):")
    print(f"  {'name':<14}{'quality':>8}  {'lambda':>8}  {'file':<22}status")
    for r in models:
        lmbda = "-" if r["lambda"] is None else f"{r['lambda']:g}"
        print(f"  {r['name']:<14}{r['quality']:>8}  {lmbda:>8}  {r['file']:<22}{'present' if r['present'] else 'missing'}")
    print("traditional codecs (compressai-transtic eval -a NAME):")
    for r in codecs:
        print(f"  {r['name']:<10}{r['status']}")
    return 0
