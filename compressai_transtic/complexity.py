"""Complexity of TIC / TransTIC variants and baselines: MACs per pixel and parameters (Table A1).

Run ``python -m compressai_transtic.complexity`` to print, for every row of the
paper's Table A1 and for the learned baselines (TIC+SFT, TIC+channel selection,
TIC+ROI), encoder/decoder kMACs per
input pixel under the paper's counting convention and under true counting, and
encoder/decoder parameters (millions), next to the paper's figures where it has them.

Counting uses PyTorch's own :class:`torch.utils.flop_counter.FlopCounterMode`,
extended with formulas for the operations the paper counts:

* matrix products (linear layers, attention ``q k^T`` and ``attn v``, including the
  CPU scaled-dot-product-attention kernel) and convolutions with their bias adds (the
  paper's convention leaves out the bias adds of linear layers);
* LayerNorm (1 per element), BatchNorm (2 per element), ReLU, LeakyReLU and max-pool (1
  per input element), bilinear upsampling (1 per output element); like the paper, no
  other element-wise operation (residual adds, the SFT's ``x * (1 + gamma) + beta``);
* transposed convolutions: the paper's convention (that of ptflops/thop) counts them on
  their *output* grid, 4x the true count at stride 2; ``convention="true"`` counts the
  multiply-accumulates actually performed. That is the only difference between the two.

Encoder = g_a + h_a (+ prompt generator and encoder prompts); decoder = h_s + g_s
(+ decoder prompts); a baseline's added layers count on the side they run on (channel
selection: its decoder runs both ``g_s`` and the feature transform).
Encoder parameters include the entropy bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from .console import report_error
from .fileio import atomic_write_text, check_writable_folder
from .filekinds import output_problem
from .imageio import DEFAULT_MAX_PIXELS
from .layers import SubPixelConvTranspose2d, SwinBlock, WindowGeometry
from .models import ADAPTED_CODECS, TIC, TransTIC
from .models.prompt_generator import ConvBNReLU
from .prompts import TABLE_A1_ROWS, PromptConfig
from .strenum import StrEnum

__all__ = ["MacConvention", "count_macs", "count_macs_both", "ComplexityRow", "measure", "table_a1", "main", "TABLE_A1"]

logger = logging.getLogger(__name__)
aten = torch.ops.aten


class MacConvention(StrEnum):
    """How multiply-accumulates are counted."""

    #: Table A1's convention: transposed convolutions on their output grid, linear layers
    #: without bias adds, prompts projected as the authors' code does
    PAPER = "paper"
    #: what this implementation computes
    TRUE = "true"


#: the values of :class:`MacConvention`
CONVENTIONS = MacConvention.values()


def _prod(shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in shape))


def _sdpa(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    *batch, queries, e = q_shape
    b, s, ev = _prod(batch), k_shape[-2], v_shape[-1]
    return 2 * (b * queries * s * e + b * queries * s * ev)


def _per_input(factor: int) -> Callable[..., int]:
    def formula(x_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * factor * _prod(x_shape)

    return formula


def _per_output(x_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * _prod(out_shape)


class _Formulas:
    """FLOP formulas (2 per multiply-accumulate) for FlopCounterMode's custom_mapping.

    They return the paper's convention and add ``true - paper`` to :attr:`extra_true`,
    so one pass yields both conventions.
    """

    def __init__(self) -> None:
        self.extra_true = 0

    def addmm(self, bias_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        m, k = a_shape
        n = b_shape[1]
        # the paper's figures leave out the bias adds of linear layers (conv biases are in)
        self.extra_true += 2 * m * n
        return 2 * m * n * k

    def baddbmm(self, bias_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        b, m, k = a_shape
        n = b_shape[-1]
        self.extra_true += 2 * b * m * n  # the added input is a linear layer's bias (or residual)
        return 2 * b * m * n * k

    def convolution(self, x_shape, w_shape, bias, stride, padding, dilation, transposed, *args, out_shape=None, **kw):
        kernel = _prod(w_shape[2:])
        bias_macs = _prod(out_shape) if bias is not None else 0
        if not transposed:  # weight (Cout, Cin / groups, k, k)
            return 2 * (_prod(out_shape) * w_shape[1] * kernel + bias_macs)
        # weight (Cin, Cout / groups, k, k); the paper counts it on the output grid
        paper = _prod(out_shape) * w_shape[0] * kernel
        true = _prod(x_shape) * w_shape[1] * kernel
        self.extra_true += 2 * (true - paper)
        return 2 * (paper + bias_macs)

    def mapping(self) -> Dict[Any, Callable[..., int]]:
        """The formula of every counted operator."""
        table: Dict[Any, Callable[..., int]] = {
            # the CPU inference path runs linear layers as batched products and
            # accumulates their outputs in place (aten.addmm_ / baddbmm_)
            aten.addmm: self.addmm,
            aten.addmm_: self.addmm,
            aten.baddbmm: self.baddbmm,
            aten.baddbmm_: self.baddbmm,
            aten.convolution: self.convolution,
            aten._convolution: self.convolution,
            aten.native_layer_norm: _per_input(1),
            aten.native_batch_norm: _per_input(2),
            aten._native_batch_norm_legit: _per_input(2),
            aten._native_batch_norm_legit_no_training: _per_input(2),
            aten.relu: _per_input(1),
            aten.relu_: _per_input(1),
            aten.leaky_relu: _per_input(1),
            aten.leaky_relu_: _per_input(1),
            aten.max_pool2d_with_indices: _per_input(1),
            aten.upsample_bilinear2d: _per_output,
        }
        cpu_sdpa = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
        if cpu_sdpa is not None:
            table[cpu_sdpa] = _sdpa
        return table


@contextlib.contextmanager
def _prompt_projection_adjustment(model: Optional[nn.Module]) -> Iterator[Callable[[], int]]:
    """Account for how the authors' code projects prompts, while the context is open.

    It concatenates the prompts to the tokens of every window before the q/k/v
    projection, so Table A1 counts ``3 C^2`` MACs per prompt token and window. This
    implementation projects only keys and values, and shared (TP-type) prompts once
    per block rather than once per window. Yields a function giving the MACs to add
    for the paper's convention (always 0 without a model).
    """
    extra = [0]
    blocks = [m for m in model.modules() if isinstance(m, SwinBlock)] if model is not None else []

    def counting(block: SwinBlock) -> Callable[..., Any]:
        original = block.forward_windows

        def forward_windows(tokens: Tensor, geometry: WindowGeometry, prompts: Any = None) -> Any:
            if prompts is not None and not prompts.full_tokens:  # full tokens: q/k/v computed already
                b, nw, _, c = tokens.shape
                if prompts.tokens is not None:
                    p = prompts.tokens.shape[-2]
                    ours = p * 2 * c * c
                else:
                    p = (block.window_size // prompts.downsample) ** 2
                    ours = b * nw * p * 2 * c * c
                extra[0] += b * nw * p * 3 * c * c - ours
            return original(tokens, geometry, prompts)

        return forward_windows

    for block in blocks:
        block.forward_windows = counting(block)  # type: ignore[method-assign]  # shadows the method
    try:
        yield lambda: extra[0]
    finally:
        for block in blocks:
            block.__dict__.pop("forward_windows", None)


#: inference shortcuts that compute a layer in another form, and the switch that turns
#: each off: counting counts the layers as built
_SHORTCUTS = ((ConvBNReLU, "fold_batchnorm"), (SubPixelConvTranspose2d, "subpixel"))


@contextlib.contextmanager
def _layers_as_built(model: Optional[nn.Module]) -> Iterator[None]:
    """Run the layers of ``model`` as built while the context is open: inference folds
    BatchNorms into the convolutions before them and runs some transposed convolutions
    as sub-pixel convolutions; Table A1 counts the layers."""
    switched = [
        (module, name, module.__dict__.get(name))
        for kind, name in _SHORTCUTS
        for module in (model.modules() if model is not None else ())
        if isinstance(module, kind)
    ]
    for module, name, _ in switched:
        setattr(module, name, False)
    try:
        yield
    finally:
        for module, name, value in switched:
            if value is None:
                module.__dict__.pop(name, None)  # the class default again
            else:
                setattr(module, name, value)


def count_macs_both(fn: Callable[[], Any], model: Optional[nn.Module] = None) -> Tuple[int, int]:
    """``(paper, true)`` multiply-accumulates of ``fn()`` in one pass (see :func:`count_macs`)."""
    formulas = _Formulas()
    counter = FlopCounterMode(display=False, custom_mapping=formulas.mapping())
    with _prompt_projection_adjustment(model) as adjustment, _layers_as_built(model), torch.no_grad(), counter:
        fn()
    flops = counter.get_total_flops()
    return flops // 2 + adjustment(), (flops + formulas.extra_true) // 2


def count_macs(
    fn: Callable[[], Any], convention: MacConvention = MacConvention.PAPER, model: Optional[nn.Module] = None
) -> int:
    """Multiply-accumulates of ``fn()`` under ``convention``.

    Args:
        fn: the computation to count (run once, without gradients).
        convention: a :class:`MacConvention` (or its value); ``paper`` needs ``model``
            to count prompts as the authors' code projects them.
        model: the model ``fn`` runs, to find its Swin blocks and to count its layers
            as built under both conventions: inference folds BatchNorms into the
            convolutions and runs :class:`~.layers.SubPixelConvTranspose2d` layers as
            sub-pixel convolutions, so without ``model`` "true" counts those forms.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    paper, true = count_macs_both(fn, model)
    return paper if convention == MacConvention.PAPER else true


@dataclass
class ComplexityRow:
    """Complexity of one model configuration at one input size."""

    section: str
    variant: str
    enc_kmacs_per_px: float
    dec_kmacs_per_px: float
    enc_kmacs_per_px_true: float
    dec_kmacs_per_px_true: float
    enc_params_m: float
    dec_params_m: float
    paper: Optional[Dict[str, float]] = None

    def differences(self) -> Dict[str, float]:
        """Relative differences (ours / paper - 1) for each paper figure."""
        if not self.paper:
            return {}
        return {k: getattr(self, k) / v - 1.0 for k, v in self.paper.items() if v}


def _parameters(model: nn.Module, prefixes: Iterable[str]) -> int:
    prefixes = tuple(prefixes)
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))


def measure(model: TIC, height: int = 256, width: int = 256) -> Dict[str, float]:
    """kMACs per pixel (both conventions) and parameters (M) of encoder and decoder."""
    model = model.eval()
    x = torch.rand(1, 3, height, width)
    with torch.no_grad():
        xp = model._pad(x)
        y = model.analysis(xp)
        z = model.h_a(y)
        z_hat = torch.round(z)
        y_hat = torch.round(y)

    def encoder() -> None:
        model.h_a(model.analysis(xp))

    def decoder() -> None:
        model.h_s(z_hat)
        model.synthesis(y_hat)
        if hasattr(model, "machine_features"):  # channel selection: the transform too
            model.machine_features(y_hat, (height, width))

    pixels = height * width
    out: Dict[str, float] = {}
    for part, fn in (("enc", encoder), ("dec", decoder)):
        paper, true = count_macs_both(fn, model)
        out[f"{part}_kmacs_per_px"] = paper / pixels / 1e3
        out[f"{part}_kmacs_per_px_true"] = true / pixels / 1e3
    out["enc_params_m"] = _parameters(model, ("g_a", "h_a", "entropy_bottleneck")) / 1e6
    out["dec_params_m"] = _parameters(model, ("g_s", "h_s")) / 1e6
    return out


#: the figures of a Table A1 row, printed next to ours
PAPER_FIGURES = ("enc_kmacs_per_px", "dec_kmacs_per_px", "enc_params_m", "dec_params_m")


def _read_table_a1() -> List[Dict[str, Any]]:
    """The paper's Table A1 (figures reproduced from the supplementary material)."""
    rows = [
        ("base", "TIC", 142.54, 188.52, 3.65, 3.86),
        ("A3.1", "Shallow", 322.80, 209.51, 4.65, 3.88),
        ("A3.1", "Deep", 332.03, 202.60, 5.24, 3.89),
        ("A3.2", "Enc IP + Dec IP", 332.03, 276.39, 5.24, 5.06),
        ("A3.2", "Enc IP + Dec TP", 332.03, 202.60, 5.24, 3.89),
        ("A3.3", "4 prompts", 302.06, 192.04, 5.24, 3.87),
        ("A3.3", "16 prompts", 332.03, 202.60, 5.24, 3.89),
        ("A3.3", "64 prompts", 451.91, 244.87, 5.24, 3.98),
        ("A3.4", "STB-1234", 332.03, 202.60, 5.24, 3.89),
        ("A3.4", "STB-12", 332.03, 200.80, 5.24, 3.87),
        ("A3.4", "STB-34", 332.03, 190.32, 5.24, 3.88),
        ("A3.5", "Enc IP + Dec none", 332.03, 188.52, 5.24, 3.86),
        ("A3.5", "Enc none + Dec TP", 142.54, 202.60, 3.65, 3.89),
    ]
    keys = ("section", "variant", *PAPER_FIGURES)
    return [dict(zip(keys, r)) for r in rows]


#: the paper's Table A1 as a list of dicts
TABLE_A1: List[Dict[str, Any]] = _read_table_a1()

#: rows measured beyond Table A1: the paper's learned baselines (the table has no figures
#: for them), as (section, label, architecture name)
BASELINE_ROWS: List[Dict[str, Any]] = [
    {"section": "baseline", "variant": "TIC+SFT", "arch": "tic-sft"},
    {"section": "baseline", "variant": "TIC+ChSel", "arch": "tic-chsel"},
    {"section": "baseline", "variant": "TIC+ROI", "arch": "tic-roi"},
]


def _row_model(row: Mapping[str, Any]) -> str:
    """The model a row measures: ``tic``, a TransTIC variant name or an architecture name."""
    if "arch" in row:
        return row["arch"]
    return TABLE_A1_ROWS[(row["section"], row["variant"])] or "tic"


def select_rows(variants: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """The rows to measure: all (Table A1, then the baselines), or those named by ``variants``.

    A name is a row's label as the paper prints it (``Deep``, ``STB-12``, ``TIC``,
    ``TIC+SFT``...), a prompt variant of :meth:`PromptConfig.variant` (``deep``,
    ``stb-12``...), ``tic`` for the base codec or a baseline's architecture name
    (``tic-sft``), compared without case.

    Raises:
        ValueError: a name that matches no row (the message lists the names).
    """
    rows = TABLE_A1 + BASELINE_ROWS
    if not variants:
        return list(rows)
    keys: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        keys.setdefault(row["variant"].lower(), []).append(row)
        keys.setdefault(_row_model(row), []).append(row)
    unknown = [v for v in variants if v.lower() not in keys]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(sorted(keys))}")
    chosen = {id(p) for v in variants for p in keys[v.lower()]}
    return [p for p in rows if id(p) in chosen]


def _build(name: str, N: int, M: int) -> TIC:
    if name == "tic":
        return TIC(N=N, M=M)
    if name in ADAPTED_CODECS and name != "transtic":
        return ADAPTED_CODECS[name](N=N, M=M)
    return TransTIC(PromptConfig.variant(name), N=N, M=M)


def table_a1(
    height: int = 256,
    width: int = 256,
    N: int = 128,
    M: int = 192,
    progress: bool = False,
    variants: Optional[Sequence[str]] = None,
) -> List[ComplexityRow]:
    """Measure the rows (all, or those of :func:`select_rows`) on models with random
    weights (counts do not depend on them); ``progress`` shows a tqdm bar on stderr that
    names the model being measured."""
    cache: Dict[str, Dict[str, float]] = {}
    rows: List[ComplexityRow] = []
    bar = tqdm(select_rows(variants), desc="Table A1", unit="row", leave=False, disable=not progress)
    for row in bar:
        name = _row_model(row)
        if name not in cache:
            bar.set_postfix_str(f"measuring {name}")
            cache[name] = measure(_build(name, N, M), height, width)
            logger.info("measured %s", name)
        figures = {k: row[k] for k in PAPER_FIGURES if k in row}
        rows.append(ComplexityRow(row["section"], row["variant"], paper=figures or None, **cache[name]))
    return rows


def _cell(row: ComplexityRow, key: str, digits: int) -> str:
    """``ours (paper) difference%`` of one figure, or ours alone without a paper figure."""
    ours = getattr(row, key)
    paper = (row.paper or {}).get(key)
    if paper is None:
        return f"{ours:.{digits}f}"
    return f"{ours:.{digits}f} ({paper:.{digits}f}) {100 * row.differences()[key]:+.2f}%"


def format_table(rows: Sequence[ComplexityRow]) -> str:
    """Plain-text table: ours (paper) [difference] per figure."""
    header = (
        f"{'section':<8} {'variant':<18} {'enc kMACs/px':>26} {'dec kMACs/px':>26} "
        f"{'enc true':>9} {'dec true':>9} {'enc params (M)':>22} {'dec params (M)':>22}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.section:<8} {r.variant:<18} {_cell(r, 'enc_kmacs_per_px', 2):>26} "
            f"{_cell(r, 'dec_kmacs_per_px', 2):>26} "
            f"{r.enc_kmacs_per_px_true:>9.2f} {r.dec_kmacs_per_px_true:>9.2f} "
            f"{_cell(r, 'enc_params_m', 3):>22} {_cell(r, 'dec_params_m', 3):>22}"
        )
    lines.append("")
    lines.append(
        "ours (paper) difference. 'true': what this implementation computes (transposed convolutions on "
        "their input grid, every bias add, prompts projected once)."
    )
    return "\n".join(lines)


def _check_size(size: Sequence[int]) -> None:
    """A size the counting pass (one forward of each model) can run at."""
    height, width = size
    if height < 1 or width < 1 or height * width > DEFAULT_MAX_PIXELS:
        raise ValueError(
            f"--size {height} {width}: sides must be positive and the image at most {DEFAULT_MAX_PIXELS} pixels"
        )


def _check_outputs(paths: Sequence[Path], force: bool) -> None:
    if len(set(paths)) < len(paths):
        raise ValueError("--json and --csv name the same file")
    for path in paths:
        check_writable_folder(path.parent, "output")
        problem = output_problem(path, (), force, "--json / --csv")
        if problem:
            raise ValueError(f"{path} {problem}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compressai_transtic.complexity",
        description="Table A1 of TransTIC: kMACs per pixel and parameters of every variant.",
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(256, 256),
        metavar=("H", "W"),
        help="input size (default: 256 256, the paper's)",
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        metavar="NAME",
        help="measure these rows only: the paper's labels "
        "(Deep, STB-12...) or prompt variants (deep, stb-12...; tic for the base codec)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    parser.add_argument("--csv", type=Path, help="also write the rows as CSV to this file")
    parser.add_argument("--force", action="store_true", help="overwrite existing --json / --csv files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        select_rows(args.variant)
        _check_size(args.size)
        _check_outputs([p for p in (args.json, args.csv) if p is not None], args.force)
    except (ValueError, OSError) as err:
        return report_error(err)
    height, width = args.size
    rows = table_a1(height, width, progress=not args.no_progress, variants=args.variant)
    print(f"Table A1 at {args.size[0]}x{args.size[1]} (kMACs per input pixel, parameters in millions)")
    print(format_table(rows))
    try:
        if args.json:
            atomic_write_text(args.json, json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        if args.csv:
            buffer = io.StringIO()
            writer = csv.DictWriter(
                buffer, fieldnames=[k for k in asdict(rows[0]) if k != "paper"], lineterminator="\n"
            )
            writer.writeheader()
            for r in rows:
                writer.writerow({k: v for k, v in asdict(r).items() if k != "paper"})
            atomic_write_text(args.csv, buffer.getvalue())
    except OSError as err:
        return report_error(err)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
