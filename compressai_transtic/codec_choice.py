"""The codec a coding command runs, and what ``encode``, ``decode`` and ``bitmap`` share.

A :class:`CodecChoice` is what a ``.ttic`` file records about its codec; it becomes the
evaluator's :class:`~.evaluation.codecs.CodecSpec` and is loaded by
:func:`load_codec`, which names a missing or damaged file and an adapter put on the
wrong base codec. The arguments and checks the coding commands have in common
(``--seed``, ``--max-pixels``, ``--base-checkpoint``, the refusal of existing outputs,
the size limit) are here too, so that every command counts and words them alike.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import torch

from .adapter_files import AdapterMismatchError, base_codec_hash, read_adapter
from .console import and_more, printable
from .evaluation.codecs import CodecSpec, WeightsSource
from .filekinds import regular_file_problem
from .imageio import DEFAULT_MAX_PIXELS, read_image
from .models.tic import PAD_MULTIPLE, coded_pixels
from .strenum import parse_choice
from .zoo import ChecksumMismatchError, WeightsUnavailableError, get_weights

__all__ = [
    "MAX_SEED",
    "SHOWN_OUTPUTS",
    "SOURCES",
    "BaseCodecMismatch",
    "CodecChoice",
    "CodecCommandError",
    "add_base_checkpoint_argument",
    "add_max_pixels_argument",
    "check_base_checkpoint",
    "existing_outputs_message",
    "load_codec",
    "pixel_limit",
    "read_quality_map",
    "seed_argument",
    "size_problem",
]


class CodecCommandError(Exception):
    """A user error: printed on stderr, exit status 2."""


class BaseCodecMismatch(CodecCommandError):
    """An adapter loaded on another base codec than the one it was trained on.

    Attributes:
        trained_on: the base codec hash the adapter file records
            (:func:`~.adapter_files.base_codec_hash`).
        found: the hash of the base codec it was loaded on.
    """

    def __init__(self, message: str, trained_on: str, found: str) -> None:
        super().__init__(message)
        self.trained_on, self.found = trained_on, found


#: the largest seed, either way, of --random-weights: ``seed * 1000 + quality`` seeds torch
MAX_SEED = 2**53


def seed_argument(text: str) -> int:
    """``--seed``: an integer within :data:`MAX_SEED` either way."""
    value = int(text)
    if abs(value) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is beyond 2^53 either way")
    return value


def pixel_limit(text: str) -> int:
    """``--max-pixels``: a positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is no pixel count: give a positive number")
    return value


def add_max_pixels_argument(parser: argparse.ArgumentParser, also: str = "") -> None:
    """``--max-pixels N``: the largest image a coding command accepts, counted as the
    codecs process it (:func:`size_problem`); ``also`` adds what else it bounds."""
    parser.add_argument(
        "--max-pixels",
        type=pixel_limit,
        default=DEFAULT_MAX_PIXELS,
        help=(
            f"largest image accepted, in pixels as the codecs process it: its size padded to multiples of "
            f"{PAD_MULTIPLE}{also} (default {DEFAULT_MAX_PIXELS})"
        ),
    )


def add_base_checkpoint_argument(parser: argparse.ArgumentParser, use: str) -> None:
    """``--base-checkpoint PATH``: the base codec of ``--adapter`` (as ``eval``'s)."""
    parser.add_argument(
        "--base-checkpoint",
        type=Path,
        metavar="PATH",
        help="the base codec (TIC checkpoint) --adapter was trained on, for an adapter trained with "
        f"`train --base PATH` (default: the released base_codec_<quality>); {use}",
    )


def check_base_checkpoint(args: argparse.Namespace) -> None:
    """``--base-checkpoint``: with ``--adapter`` only, and a regular file (``eval``'s checks)."""
    if args.base_checkpoint is None:
        return
    if args.adapter is None:
        raise CodecCommandError("--base-checkpoint goes with --adapter")
    problem = regular_file_problem(args.base_checkpoint)
    if problem is not None:
        raise CodecCommandError(f"--base-checkpoint {args.base_checkpoint}: {problem}")


#: the most existing outputs named in one refusal (then "and N more")
SHOWN_OUTPUTS = 10


def existing_outputs_message(existing: Sequence[Path]) -> str:
    """The refusal of outputs that exist without ``--force``, naming every one (up to
    :data:`SHOWN_OUTPUTS`, then how many more)."""
    if len(existing) == 1:
        return f"{existing[0]} exists; pass --force to overwrite it"
    named = ", ".join(str(p) for p in existing[:SHOWN_OUTPUTS]) + and_more(existing, SHOWN_OUTPUTS)
    return f"{len(existing)} outputs exist: {named}; pass --force to overwrite them"


#: the codecs that a .ttic file may name: released or random weights, or an adapter
SOURCES = (WeightsSource.PRETRAINED, WeightsSource.RANDOM, WeightsSource.ADAPTER)


@dataclass(frozen=True)
class CodecChoice:
    """What a .ttic file says about its codec (the ``codec`` JSON object).

    ``base`` and ``base_sha256`` are set for an adapter on a base codec given with
    ``--base-checkpoint``: the checkpoint's file name and its
    :func:`~.adapter_files.base_codec_hash` (the hash adapter files record). They are
    left out of the JSON otherwise (not written as null): a file of any other codec
    holds no base entries.
    """

    architecture: str
    quality: int
    task: Optional[str]
    source: WeightsSource  # one of SOURCES (or its value)
    seed: int = 0
    adapter: Optional[str] = None
    random_base: bool = False
    base: Optional[str] = None
    base_sha256: Optional[str] = None

    def __post_init__(self) -> None:
        source = parse_choice(WeightsSource, self.source, "codec source")
        if source not in SOURCES:
            raise ValueError(f"a coded file cannot name a {source} codec; expected one of {', '.join(SOURCES)}")
        object.__setattr__(self, "source", source)

    @property
    def random_weights(self) -> bool:
        """Whether any part of the codec is randomly initialised."""
        return self.source is WeightsSource.RANDOM or self.random_base

    def description(self) -> Dict[str, Any]:
        """The fields written to a file (``base`` and ``base_sha256`` only when set)."""
        fields = asdict(self)
        for key in ("base", "base_sha256"):
            if fields[key] is None:
                del fields[key]
        return fields

    def check_adapter_given(self, adapter_path: Optional[Path]) -> None:
        """Refuse to build an adapter codec without its ``--adapter``."""
        if self.source is WeightsSource.ADAPTER and adapter_path is None:
            if self.base is not None:
                raise CodecCommandError(
                    f"coded with the adapter {printable(self.adapter)} on the base codec {printable(self.base)}: "
                    "pass them with --adapter and --base-checkpoint"
                )
            raise CodecCommandError(f"coded with the adapter {printable(self.adapter)}: pass it with --adapter")

    def spec(self, adapter_path: Optional[Path], base_path: Optional[Path] = None) -> CodecSpec:
        """The evaluator's rate point of this codec: ``adapter_path`` and ``base_path``
        (``--adapter``, ``--base-checkpoint``) are used by adapter codecs only."""
        self.check_adapter_given(adapter_path)
        adapter = self.source is WeightsSource.ADAPTER
        return CodecSpec(
            label=self.architecture,
            architecture=self.architecture,
            quality=self.quality,
            task=self.task,
            source=self.source,
            path=str(adapter_path) if adapter else None,
            base_path=str(base_path) if adapter and base_path is not None else None,
            random_base=self.random_base,
            seed=self.seed,
        )

    def base_spec(self, base_path: Optional[Path] = None) -> CodecSpec:
        """The base codec alone of an adapter codec, as :meth:`spec`'s loads it."""
        if base_path is not None:
            return CodecSpec("base", "tic", self.quality, None, WeightsSource.CHECKPOINT, str(base_path))
        source = WeightsSource.zoo(self.random_base)
        return CodecSpec("base", "tic", self.quality, None, source, seed=self.seed)

    def base_words(self, base_path: Optional[Path] = None) -> str:
        """The base codec of an adapter codec, for messages."""
        if base_path is not None:
            return f"--base-checkpoint {base_path}"
        if self.random_base:
            return f"the random base codec of --random-weights (seed {self.seed}, quality {self.quality})"
        return f"the released base codec base_codec_{self.quality}.pth.tar (quality {self.quality})"

    def weights_name(self) -> str:
        if self.source is WeightsSource.RANDOM:
            return f"random weights (seed {self.seed})"
        if self.source is WeightsSource.ADAPTER:
            if self.base is not None:
                return f"adapter {self.adapter} on {self.base}"
            return f"adapter {self.adapter} on " + (
                "a random base codec" if self.random_base else f"base_codec_{self.quality}.pth.tar"
            )
        return get_weights(self.architecture, self.quality, self.task).filename


def load_codec(codec: CodecChoice, adapter: Optional[Path], device: str, base: Optional[Path] = None):
    """The codec of ``codec`` in eval mode, built by the evaluator's
    :meth:`~.evaluation.codecs.CodecSpec.load`; an adapter codec goes on ``base``
    (``--base-checkpoint``; ``None``: the released or random base codec).

    Raises:
        BaseCodecMismatch: the adapter was trained on another base codec.
        CodecCommandError: weights missing or damaged.
    """
    try:
        return codec.spec(adapter, base).load(device, progress=False)
    except WeightsUnavailableError as err:
        raise CodecCommandError(f"the weights are not here: fetch {err.url} to {err.path}") from None
    except ChecksumMismatchError as err:
        raise CodecCommandError(str(err)) from None
    except AdapterMismatchError as err:
        mismatch = _base_mismatch(codec, adapter, base)
        if mismatch is None:  # the adapter's own tensors
            raise CodecCommandError(str(err)) from None
        raise mismatch from None


def _base_mismatch(codec: CodecChoice, adapter: Optional[Path], base: Optional[Path]) -> Optional[BaseCodecMismatch]:
    """After an adapter refused its base codec: the error saying so with both hashes and
    the way out (``--base-checkpoint``), or ``None`` when the base codec is the right one."""
    if adapter is None:
        return None
    header = read_adapter(adapter)
    trained_on = header["base_sha256"]
    base_codec = codec.base_spec(base).load(progress=False)
    if not isinstance(base_codec, torch.nn.Module):  # a learned codec, never a traditional one
        return None
    found = base_codec_hash(base_codec.state_dict())
    if found == trained_on:
        return None
    return BaseCodecMismatch(
        f"adapter {adapter} was trained on another base codec than {codec.base_words(base)}: it records base "
        f"sha256 {printable(trained_on[:12])}..., that one's is {found[:12]}...; {_base_advice(header, codec)}",
        trained_on,
        found,
    )


def _base_advice(header: Mapping[str, Any], codec: CodecChoice) -> str:
    """How to give an adapter its base codec: the quality it was trained at, when that is
    another than ``-q`` (the usual cause), else ``--base-checkpoint``."""
    metadata = header.get("metadata")
    trained_quality = metadata.get("quality") if isinstance(metadata, Mapping) else None
    if isinstance(trained_quality, int) and not isinstance(trained_quality, bool) and trained_quality != codec.quality:
        return f"it was trained at quality {trained_quality}: pass -q {trained_quality}"
    return "pass the base codec it was trained on (the checkpoint given to `train --base`) with --base-checkpoint"


def read_quality_map(path: Path, max_pixels: int) -> torch.Tensor:
    """A quality-map image as ``(1, 1, H, W)`` values in [0, 1] (the mean of its channels)."""
    image, _ = read_image(path, max_pixels)
    return image.mean(1, keepdim=True)


def size_problem(height: int, width: int, max_pixels: int) -> Optional[str]:
    """Why an image of ``height`` x ``width`` is not coded under ``--max-pixels``
    (``None`` when it is): encode and decode count it as the codec processes it,
    padded to multiples of 64 (:func:`~.models.tic.coded_pixels`), so that what one
    codes the other decodes."""
    pixels = coded_pixels(height, width)
    if pixels <= max_pixels:
        return None
    return (
        f"{width}x{height} pixels are coded as {pixels} (padded to multiples of {PAD_MULTIPLE}), more than "
        f"--max-pixels {max_pixels}; raise --max-pixels to code it"
    )
