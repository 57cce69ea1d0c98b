"""``compressai-transtic bitmap``: where the bits of y go, per latent position (the
paper's Fig. A13-A15).

For each codec, the bits of every position of the latent ``y`` (summed over its
channels) are measured two ways: from the likelihoods of ``forward`` in eval mode, and
from the coder's own tables, i.e. what each symbol costs in the real stream
(:func:`compressai_transtic.entropy_coder.symbol_bits`; the sum equals the y string's
size up to the coder's rounding). The maps are drawn over the image, codecs side by
side on one colour scale (bits per position, each position covering 16 x 16 pixels),
with the real-stream rate, the PSNR and, with ``--classify``, ResNet50's top-1 label
under each. ``--npy`` also saves each codec's maps as ``(2, h, w)`` float arrays
(likelihood bits, stream bits) for scripting, cropped like the figure to the positions
over the image: ``h, w = ceil(H / 16), ceil(W / 16)`` for an ``H`` x ``W`` image (the
codec pads it to multiples of 64 on the right and at the bottom; the padding's positions
are left out, so the arrays can sum to less than the totals printed).
"""

from __future__ import annotations

import argparse
import functools
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torchvision.models import ResNet50_Weights

from .adapter_files import read_adapter
from .codec_choice import (
    SHOWN_OUTPUTS,
    CodecChoice,
    CodecCommandError,
    add_base_checkpoint_argument,
    add_max_pixels_argument,
    check_base_checkpoint,
    existing_outputs_message,
    load_codec,
    read_quality_map,
    seed_argument,
    size_problem,
)
from .console import and_more, printer, report_error
from .devices import check_device
from .download import ChecksumMismatchError, WeightsToFetchError
from .entropy_coder import symbol_bits
from .evaluation.codecs import WeightsSource
from .fileio import atomic_write, atomic_write_bytes, check_writable_folder
from .filekinds import output_problem
from .imageio import ImageReadError, read_image
from .metrics import psnr
from .models import TICROI
from .tasks import Task, get_task
from .tasks.weights import DEFAULT_WEIGHTS
from .zoo import fetch_all

__all__ = ["BitMaps", "bit_maps", "image_positions", "add_bitmap_arguments", "run_bitmap"]

#: pixels of the image along each side of one position of y
POSITION = 16


@dataclass
class BitMaps:
    """Per-position bits of y for one image and codec, over the whole padded grid
    (:func:`image_positions` gives the part over the image)."""

    likelihood: np.ndarray  # (h, w): -sum over channels of log2 p(y_hat)
    stream: np.ndarray  # (h, w): the cost of each position's symbols in the real stream
    bpp: float  # real bitstream (every string: y, z, header, an ROI codec's map) bits per pixel
    psnr: float
    x_hat: Tensor  # decoded image, (1, 3, H, W) in [0, 1]
    quality_map: Optional[np.ndarray] = None  # (h, w): an ROI codec's coded map, values in [0, 1]


@torch.no_grad()
def bit_maps(model: Any, x: Tensor, quality_map: Optional[Tensor] = None) -> BitMaps:
    """Measure the bit maps of ``x`` ((1, 3, H, W) in [0, 1]) under ``model`` (a codec of
    this package in eval mode with its entropy tables built; for an ROI codec, under
    ``quality_map``, whose coded cells are returned too)."""
    if x.shape[0] != 1:
        raise ValueError("bit maps are drawn one image at a time")
    roi = isinstance(model, TICROI)
    if quality_map is not None and not roi:
        raise ValueError("a quality map is for tic-roi codecs")
    extra = {"quality_map": quality_map} if quality_map is not None else {}
    out = model(x, **extra)
    likelihood = -torch.log2(out["likelihoods"]["y"][0]).sum(0)
    terms = model.coding_terms(x, **extra)
    enc = model.compress_terms(terms, x.shape[-2:])
    symbols = torch.round(terms.y - terms.means)[0].to(torch.int64).cpu().numpy()
    indexes = terms.indexes[0].cpu().numpy()
    stream = symbol_bits(symbols, indexes, model.gaussian_conditional.coding_tables()).sum(0)
    x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    total_bytes = sum(len(s[0]) for s in enc["strings"])
    pixels = x.shape[-2] * x.shape[-1]
    grid = out["quality_map"][0, 0].cpu().numpy() if roi else None
    return BitMaps(likelihood.cpu().numpy(), stream, 8 * total_bytes / pixels, psnr(x_hat, x), x_hat.cpu(), grid)


def image_positions(height: int, width: int) -> Tuple[int, int]:
    """Rows and columns of y's positions over an image of ``height`` x ``width``
    pixels (each covers 16 x 16 pixels of the padded image; the last ones partly)."""
    return math.ceil(height / POSITION), math.ceil(width / POSITION)


def add_bitmap_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic bitmap``."""
    parser.description = "Draw where the bits of y go, per latent position, for several codecs side by side."
    parser.add_argument("image", type=Path, help="the image")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=("tic", "transtic"),
        default=["tic", "transtic"],
        help="codecs to compare (default: tic transtic)",
    )
    parser.add_argument(
        "--task", choices=("cls", "det", "seg"), default="cls", help="task of transtic's released prompts (default cls)"
    )
    parser.add_argument("-q", "--quality", type=int, choices=(1, 2, 3, 4), default=1, help="quality (default 1)")
    parser.add_argument(
        "--adapter",
        type=Path,
        help="an adapter file written by `train` (prompts, or a baseline's SFT, channel-selection or ROI layers): "
        "adds a panel for its codec, whatever --models says",
    )
    add_base_checkpoint_argument(parser, "with --random-weights, the other panels stay random")
    parser.add_argument(
        "--roi-map",
        type=Path,
        metavar="IMAGE",
        help="with a tic-roi --adapter: the quality map it codes with (white = full quality); drawn as the last panel",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    parser.add_argument(
        "--npy",
        action="store_true",
        help="also write each codec's maps to OUTPUT.<codec>.npy (OUTPUT without .png; an adapter's file name "
        "with its dots as _): a (2, h, w) float64 array of the likelihood bits and the stream bits of y per "
        "position, cropped like the figure to the positions over the image, h, w = ceil(H / 16), ceil(W / 16) "
        "(the padding's positions are left out)",
    )
    parser.add_argument("--classify", action="store_true", help="ResNet50's top-1 label under each panel")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random codecs, --adapter's base codec and ResNet50 (results mean nothing)",
    )
    parser.add_argument(
        "--seed", type=seed_argument, default=0, help="seed of --random-weights (default 0; at most 2^53 either way)"
    )
    parser.add_argument("--device", default="cpu", help="where the codecs run: cpu, cuda, cuda:1 ... (default cpu)")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT and its .npy files")
    add_max_pixels_argument(parser, also="; --roi-map is read up to as many pixels")


def _codecs(args: argparse.Namespace) -> List[Tuple[str, CodecChoice]]:
    source = WeightsSource.zoo(args.random_weights)
    codecs = []
    for name in args.models:
        task = args.task if name == "transtic" else None
        codecs.append((name + (f" ({task})" if task else ""), CodecChoice(name, args.quality, task, source, args.seed)))
    check_base_checkpoint(args)
    if args.adapter is not None:
        arch = read_adapter(args.adapter)["arch"]
        base = args.base_checkpoint
        choice = CodecChoice(
            arch,
            args.quality,
            None,
            WeightsSource.ADAPTER,
            args.seed,
            args.adapter.name,
            args.random_weights and base is None,
            base=None if base is None else base.name,
        )
        codecs.append((f"{args.adapter.name} ({arch})", choice))
    if args.roi_map is not None and not any(c.architecture == "tic-roi" for _, c in codecs):
        raise CodecCommandError("--roi-map is for a tic-roi --adapter")
    return codecs


def _fetch_weights(args: argparse.Namespace, codecs: Sequence[Tuple[str, CodecChoice]]) -> Optional[Task]:
    """Fetch the codecs' released weights and load the classifier (``--classify``)
    before any codec is built, and return the classifier: every missing file is named
    in one error.

    Raises:
        CodecCommandError: files neither cached nor downloadable (all named).
    """
    specs = [codec.spec(args.adapter, args.base_checkpoint) for _, codec in codecs]
    weights = "random" if args.random_weights else DEFAULT_WEIGHTS
    classifier = get_task("cls", weights=weights, device=args.device) if args.classify else None
    try:
        fetch_all((w for spec in specs for w in spec.released_weights()), [classifier] if classifier else [])
    except WeightsToFetchError as err:
        raise CodecCommandError(
            f"{err}\n(or run with --random-weights to test the command without any weights)"
        ) from None
    return classifier


def _draw(x: Tensor, panels: Sequence[Tuple[str, BitMaps, str]], random: bool) -> bytes:
    from matplotlib.figure import Figure  # Agg canvas; the user's pyplot backend is left alone

    image = x[0].permute(1, 2, 0).numpy()
    height, width = image.shape[:2]
    rows, cols = image_positions(height, width)
    top = max(float(p[1].stream[:rows, :cols].max()) for p in panels) or 1.0  # the scale of what is shown
    maps_panel = next((p[1].quality_map for p in panels if p[1].quality_map is not None), None)
    count = len(panels) + (maps_panel is not None)
    fig = Figure(figsize=(4.2 * count + 0.8, 4.2 * height / width + 1.4), dpi=150)
    axes = fig.subplots(1, count, squeeze=False)[0]
    shown: Any = None
    for ax, (label, maps, extra) in zip(axes, panels):
        ax.imshow(image)
        rows, cols = maps.stream.shape
        # each latent position covers 16 x 16 pixels of the padded image; crop to the image
        shown = ax.imshow(
            maps.stream,
            cmap="inferno",
            vmin=0.0,
            vmax=top,
            alpha=0.6,
            interpolation="nearest",
            extent=(0, cols * 16, rows * 16, 0),
        )
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(f"{maps.bpp:.3f} bpp, {maps.psnr:.2f} dB" + (f"\n{extra}" if extra else ""), fontsize=9)
    fig.colorbar(shown, ax=list(axes[: len(panels)]), shrink=0.8, label="bits of y per position (16x16 px)")
    if maps_panel is not None:
        _draw_quality_map(axes[-1], image, maps_panel)
    if random:
        fig.suptitle("RANDOM WEIGHTS: the maps test the pipeline and mean nothing", color="firebrick")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _draw_quality_map(ax: Any, image: np.ndarray, quality_map: np.ndarray) -> None:
    """The ROI codec's coded map (white = full quality) over a faded image, as the last panel."""
    rows, cols = quality_map.shape
    ax.imshow(image, alpha=0.35)
    ax.imshow(
        quality_map,
        cmap="gray",
        vmin=0,
        vmax=1,
        alpha=0.65,
        interpolation="nearest",
        extent=(0, cols * 16, rows * 16, 0),
    )
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("quality map (coded)", fontsize=10)


def _save_maps(f: BinaryIO, maps: BitMaps, rows: int, cols: int) -> None:
    """``--npy``: the likelihood and stream bits of the ``rows`` x ``cols`` positions over the image."""
    np.save(f, np.stack([maps.likelihood[:rows, :cols], maps.stream[:rows, :cols]]))


#: the most elongated image drawn (height to width or width to height): the figure's
#: height follows the image's, and a strip of pixels would make a figure of gigapixels
MAX_ASPECT = 16


def _check_size(path: Path, x: Tensor, max_pixels: int) -> None:
    """Refuse an image that bitmap cannot draw (too elongated) or that the codecs
    would process above ``--max-pixels`` (counted padded, as ``encode`` counts)."""
    height, width = x.shape[-2:]
    if max(height / width, width / height) > MAX_ASPECT:
        raise CodecCommandError(
            f"{path}: a {width}x{height} image is more elongated than {MAX_ASPECT}:1, which bitmap draws; crop it first"
        )
    problem = size_problem(height, width, max_pixels)
    if problem is not None:
        raise CodecCommandError(f"{path}: {problem}")


def _npy_target(output: Path, label: str) -> Path:
    """``OUTPUT.<codec>.npy``: the maps of one panel (``--npy``)."""
    return output.with_suffix(f".{label.split(' ')[0].replace('.', '_')}.npy")


def _check_targets(args: argparse.Namespace, targets: Sequence[Path]) -> None:
    """Refuse targets that repeat, that are one of the inputs (even with ``--force``), or
    that exist without ``--force`` (naming every one)."""
    if len(set(targets)) < len(targets):
        raise CodecCommandError(f"two outputs would be written to the same file among {[str(t) for t in targets]}")
    inputs = (args.image, args.roi_map, args.adapter, args.base_checkpoint)
    existing = []
    for target in targets:
        problem = output_problem(target, inputs, True, "-o")  # an input: refused even with --force
        if problem:
            raise CodecCommandError(f"{target} {problem}")
        if not args.force and output_problem(target, (), False, "-o"):
            existing.append(target)
    if existing:
        raise CodecCommandError(existing_outputs_message(existing))


def _written(paths: Sequence[Path]) -> str:
    """The files written, for the last line of output."""
    named = [str(p) for p in paths[:SHOWN_OUTPUTS]]
    if len(paths) <= SHOWN_OUTPUTS and len(named) > 1:
        return f"{', '.join(named[:-1])} and {named[-1]}"
    return ", ".join(named) + and_more(paths, SHOWN_OUTPUTS)


def run_bitmap(args: argparse.Namespace) -> int:
    """``compressai-transtic bitmap``; returns the exit status."""
    try:
        if args.output.suffix.lower() != ".png":
            raise CodecCommandError(f"{args.output}: the output must be a .png file")
        check_writable_folder(args.output.parent, "output")
        x, notes = read_image(args.image, args.max_pixels)
        _check_size(args.image, x, args.max_pixels)
        codecs = _codecs(args)
        npy = {label: _npy_target(args.output, label) for label, _ in codecs} if args.npy else {}
        _check_targets(args, [args.output, *npy.values()])
        check_device(args.device)
        classifier = _fetch_weights(args, codecs)
        models = [
            (label, codec, load_codec(codec, args.adapter, args.device, args.base_checkpoint))
            for label, codec in codecs
        ]
        quality_map = None if args.roi_map is None else read_quality_map(args.roi_map, args.max_pixels)
    except (CodecCommandError, ImageReadError, ChecksumMismatchError, ValueError, OSError) as err:
        return report_error(err)
    random = args.random_weights
    out = printer(random)
    panels = []
    for label, _codec, model in models:
        maps = bit_maps(model, x.to(args.device), quality_map if isinstance(model, TICROI) else None)
        extra = ""
        if classifier is not None:
            top1 = classifier.predict(maps.x_hat.to(args.device), None)["top5"][0]
            extra = f"ResNet50: {ResNet50_Weights.IMAGENET1K_V1.meta['categories'][top1]}"
        panels.append((label, maps, extra))
        share = maps.stream.sum() / max(maps.likelihood.sum(), 1e-9)
        out(
            f"{label}: {maps.bpp:.4f} bpp, {maps.psnr:.2f} dB, y bits from the stream's tables "
            f"{maps.stream.sum():.0f} (likelihoods {maps.likelihood.sum():.0f}, ratio {share:.4f})"
            + (f", {extra}" if extra else "")
        )
    rows, cols = image_positions(*x.shape[-2:])
    try:
        figure = _draw(x, panels, random)  # before any file is written
        for label, maps, _extra in panels:
            if label in npy:
                atomic_write(npy[label], functools.partial(_save_maps, maps=maps, rows=rows, cols=cols))
        atomic_write_bytes(args.output, figure)
    except (OSError, ValueError) as err:  # OutputError names the file; ValueError: a figure matplotlib cannot draw
        return report_error(err)
    note = f" ({'; '.join(notes)})" if notes else ""
    out(f"wrote {_written([args.output, *npy.values()])}{note}")
    return 0
