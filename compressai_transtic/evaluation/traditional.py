"""Codecs other than ours as rate points: JPEG, WebP, AVIF, JPEG 2000, BPG, HM and VTM.

The coding itself is done by CompressAI's own benchmark classes
(:mod:`compressai.utils.bench.codecs`): their Pillow calls, their command lines and their
RGB <-> YCbCr conversions (HM, VTM). AVIF is our subclass of their Pillow codec (Pillow
>= 11.2 writes AVIF). The rate is the size of the file the codec wrote.

A prepared image (a float tensor after the task's protocol) is rounded to 8 bits, as a
file on disk would hold it, written losslessly to a temporary PNG and given to the
benchmark class, which returns the decoded picture. Programs that are not installed are
reported before any image is coded (:func:`check_available`), naming the program and how
to get it; a program that fails mid-run raises :class:`CodecFailedError` instead of
ending the process (the benchmark helpers call ``sys.exit`` on failure).

Quality parameters: Pillow's ``quality`` for JPEG, WebP and AVIF (0..100, higher is
better); ffmpeg's ``-compression_level`` for JPEG 2000, which its OpenJPEG wrapper turns
into the compression ratio ``2 x level`` (higher is smaller); the quantisation parameter
for BPG and HM (0..51) and VTM (0..63), lower is better.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import numpy as np
import PIL
import PIL.features
import torch
from compressai.utils.bench import codecs as bench
from PIL import Image
from torch import Tensor

__all__ = [
    "AVIF",
    "CodedImage",
    "CodecFailedError",
    "CodecUnavailableError",
    "ExternalCodec",
    "TRADITIONAL_CODECS",
    "TraditionalCodec",
    "check_available",
    "codec_version",
]

logger = logging.getLogger(__name__)


class CodecUnavailableError(RuntimeError):
    """A codec's program or library is missing; the message says how to get it."""


class CodecFailedError(RuntimeError):
    """A codec's program failed on an image."""


class AVIF(bench.PillowCodec):
    """AVIF through Pillow's own AVIF plugin (libavif), like CompressAI's JPEG and WebP."""

    fmt = "avif"
    _description = f"AVIF. Pillow version {PIL.__version__}"

    @property
    def name(self) -> str:
        return "AVIF"


@dataclass(frozen=True)
class TraditionalCodec:
    """What the evaluator knows of one codec.

    Args:
        name: the name on the command line (``-a jpeg``).
        title: one line for humans.
        quality_range: valid quality parameters, inclusive.
        default_qualities: the parameters used without ``-q``: they span the rates of
            TIC and TransTIC on the paper's protocols (about 0.1 to 1 bpp).
        parameter: what the quality parameter is.
        programs: executables it runs (empty: a library inside Pillow).
        how_to_get: what to do when they are missing.
    """

    name: str
    title: str
    quality_range: Tuple[int, int]
    default_qualities: Tuple[int, ...]
    parameter: str
    programs: Tuple[str, ...] = ()
    how_to_get: str = ""

    def check_quality(self, quality: int) -> None:
        """Refuse a parameter outside :attr:`quality_range`."""
        lo, hi = self.quality_range
        if not lo <= quality <= hi:
            raise ValueError(f"invalid quality {quality} for {self.name}: its {self.parameter} runs from {lo} to {hi}")


_BUILD_HINT = (
    "build it from its sources (cmake, Release) and pass the folder holding {programs} with --{name}-build, "
    "and its intra configuration file (cfg/{cfg}) with --{name}-config"
)

TRADITIONAL_CODECS: Dict[str, TraditionalCodec] = {
    c.name: c
    for c in (
        TraditionalCodec("jpeg", "JPEG (Pillow)", (0, 100), (5, 10, 20, 40, 70), "Pillow quality"),
        TraditionalCodec("webp", "WebP (Pillow)", (0, 100), (5, 15, 30, 50, 75), "Pillow quality"),
        TraditionalCodec("avif", "AVIF (Pillow)", (0, 100), (20, 35, 50, 65, 80), "Pillow quality"),
        TraditionalCodec(
            "jpeg2000",
            "JPEG 2000 (ffmpeg, OpenJPEG)",
            (1, 1000),
            (10, 20, 40, 80, 160),
            "ffmpeg -compression_level (compression ratio 2 x level)",
            ("ffmpeg",),
            "install ffmpeg built with libopenjpeg (e.g. apt install ffmpeg) so that `ffmpeg` is on PATH",
        ),
        TraditionalCodec(
            "bpg",
            "BPG (HEVC intra, x265, YCbCr 4:4:4, 8 bits)",
            (0, 51),
            (27, 32, 37, 42, 47),
            "quantisation parameter",
            ("bpgenc", "bpgdec"),
            "build libbpg (https://bellard.org/bpg/) and put bpgenc and bpgdec on PATH, "
            "or pass them with --bpg-encoder and --bpg-decoder",
        ),
        TraditionalCodec(
            "hm",
            "HM (HEVC reference software, intra, YCbCr 4:4:4)",
            (0, 51),
            (22, 27, 32, 37, 42),
            "quantisation parameter",
            ("TAppEncoderStatic", "TAppDecoderStatic"),
            _BUILD_HINT.format(
                programs="TAppEncoderStatic and TAppDecoderStatic", name="hm", cfg="encoder_intra_main_rext.cfg"
            ),
        ),
        TraditionalCodec(
            "vtm",
            "VTM (VVC reference software, intra, YCbCr 4:4:4)",
            (0, 63),
            (22, 27, 32, 37, 42),
            "quantisation parameter",
            ("EncoderAppStatic", "DecoderAppStatic"),
            _BUILD_HINT.format(
                programs="EncoderAppStatic and DecoderAppStatic", name="vtm", cfg="encoder_intra_vtm.cfg"
            ),
        ),
    )
}

#: configuration files looked for next to a build folder (``<source>/bin`` or ``<source>/bin/umake/...``)
_DEFAULT_CONFIGS = {"hm": "encoder_intra_main_rext.cfg", "vtm": "encoder_intra_vtm.cfg"}
_PILLOW_FEATURES = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}


def _find_config(name: str, build_dir: Path) -> Optional[Path]:
    for parent in [build_dir, *build_dir.parents][:5]:
        candidate = parent / "cfg" / _DEFAULT_CONFIGS[name]
        if candidate.is_file():
            return candidate
    return None


def _program(path_or_name: str) -> Optional[str]:
    """The executable ``path_or_name`` (a path, or a name on PATH), or ``None``."""
    if os.sep in path_or_name:
        return path_or_name if os.path.isfile(path_or_name) and os.access(path_or_name, os.X_OK) else None
    return shutil.which(path_or_name)


def resolve_options(name: str, options: Mapping[str, str]) -> Dict[str, str]:
    """Complete a codec's options (programs, configuration) and check that they exist.

    Args:
        name: a key of :data:`TRADITIONAL_CODECS`.
        options: ``build`` and ``config`` (HM, VTM), ``encoder`` and ``decoder`` (BPG).

    Returns:
        The options with absolute paths, ready for :class:`ExternalCodec`.

    Raises:
        CodecUnavailableError: a program, library or file is missing (the message names it
            and says how to get it).
    """
    info = TRADITIONAL_CODECS[name]
    resolved = {k: str(v) for k, v in options.items() if v is not None}
    if name in _PILLOW_FEATURES:
        if not PIL.features.check(_PILLOW_FEATURES[name]):
            raise CodecUnavailableError(
                f"{info.title}: this Pillow ({PIL.__version__}) was built without {name.upper()} support; "
                f"install a Pillow wheel from PyPI (pip install -U pillow)"
            )
        return resolved
    if name in ("hm", "vtm"):
        build = resolved.get("build")
        if not build:
            raise CodecUnavailableError(f"{info.title} needs its build folder: {info.how_to_get}")
        build_dir = Path(build).expanduser().resolve()
        for program in info.programs:
            if _program(str(build_dir / program)) is None:
                raise CodecUnavailableError(f"{info.title}: no executable {program} in {build_dir}; {info.how_to_get}")
        config = resolved.get("config") or _find_config(name, build_dir)
        if config is None or not Path(config).is_file():
            where = config or f"cfg/{_DEFAULT_CONFIGS[name]} above {build_dir}"
            raise CodecUnavailableError(
                f"{info.title}: configuration file {where} not found; pass --{name}-config FILE"
            )
        return {"build": str(build_dir), "config": str(Path(config).expanduser().resolve())}
    defaults = {"bpg": {"encoder": "bpgenc", "decoder": "bpgdec"}, "jpeg2000": {"encoder": "ffmpeg"}}[name]
    for role, default in defaults.items():
        found = _program(resolved.get(role) or default)
        if found is None:
            raise CodecUnavailableError(
                f"{info.title}: program {resolved.get(role, default)!r} not found; {info.how_to_get}"
            )
        resolved[role] = os.path.abspath(found) if os.sep in found else found
    return resolved


def check_available(name: str, options: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """:func:`resolve_options` for a codec name that may be unknown (clear error)."""
    if name not in TRADITIONAL_CODECS:
        raise ValueError(f"unknown codec {name!r}; traditional codecs: {', '.join(TRADITIONAL_CODECS)}")
    return resolve_options(name, options or {})


def codec_version(name: str) -> str:
    """The library version behind a Pillow codec (part of result fingerprints)."""
    feature = _PILLOW_FEATURES.get(name)
    if feature is None:
        return ""
    return f"Pillow {PIL.__version__}, {feature} {PIL.features.version(feature) or 'unknown'}"


def _bench_codec(name: str, options: Mapping[str, str]) -> bench.Codec:
    """An instance of CompressAI's benchmark class for ``name``."""
    if name == "jpeg":
        return bench.JPEG(argparse.Namespace())
    if name == "webp":
        return bench.WebP(argparse.Namespace())
    if name == "avif":
        return AVIF(argparse.Namespace())
    if name == "jpeg2000":
        return bench.JPEG2000(argparse.Namespace())
    if name == "bpg":
        return bench.BPG(
            argparse.Namespace(
                m="444", b="8", c="ycbcr", e="x265", encoder_path=options["encoder"], decoder_path=options["decoder"]
            )
        )
    codec_class = bench.HM if name == "hm" else bench.VTM
    return codec_class(argparse.Namespace(build_dir=options["build"], config=options["config"], rgb=False))


class CodedImage(NamedTuple):
    """One image through a traditional codec: file size, decoded image, the codec's times (s)."""

    num_bytes: int
    x_hat: Tensor
    encoding_time: float
    decoding_time: float


class ExternalCodec:
    """One traditional codec at one quality, coding tensors through a temporary file.

    Args:
        name: a key of :data:`TRADITIONAL_CODECS`.
        quality: its quality parameter.
        options: as returned by :func:`resolve_options`.
    """

    def __init__(self, name: str, quality: int, options: Optional[Mapping[str, str]] = None) -> None:
        self.info = TRADITIONAL_CODECS[name]
        self.info.check_quality(quality)
        self.quality = int(quality)
        self.options = resolve_options(name, options or {})
        self._codec = _bench_codec(name, self.options)

    def __repr__(self) -> str:
        return f"ExternalCodec({self.info.name!r}, quality={self.quality})"

    @torch.no_grad()
    def code(self, x: Tensor) -> "CodedImage":
        """Encode and decode one image.

        Args:
            x: (1, 3, H, W) in [0, 1].

        Returns:
            the coded file's size, the decoded image (1, 3, H, W) in [0, 1] on ``x``'s
            device and in its dtype, and the codec's encoding and decoding times.
        """
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"expected one RGB image (1, 3, H, W), got {tuple(x.shape)}")
        height, width = int(x.shape[-2]), int(x.shape[-1])
        pixels = (x[0].detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8)
        with tempfile.TemporaryDirectory(prefix="transtic-codec-") as tmp:
            source = os.path.join(tmp, "input.png")
            Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(source)
            info, rec = self._run(source)
        num_bytes = int(round(float(info["bpp"]) * height * width / 8.0))
        decoded = np.asarray(rec.convert("RGB"))
        if decoded.shape[:2] != (height, width):
            raise CodecFailedError(
                f"{self.info.title} decoded {decoded.shape[1]}x{decoded.shape[0]} pixels, expected {width}x{height}"
            )
        x_hat = torch.from_numpy(decoded.copy()).permute(2, 0, 1)[None].to(torch.float64) / 255.0
        return CodedImage(
            num_bytes,
            x_hat.to(device=x.device, dtype=x.dtype),
            float(info.get("encoding_time", math.nan)),
            float(info.get("decoding_time", math.nan)),
        )

    def _run(self, source: str) -> Tuple[Dict[str, Any], Image.Image]:
        try:
            return self._codec.run(source, self.quality, metrics=["psnr-rgb"], return_rec=True)
        except SystemExit as exc:  # compressai.utils.bench.run_command ends the process on failure
            raise CodecFailedError(
                f"{self.info.title} q{self.quality} failed (its output is above); exit status {exc.code}"
            ) from None
        except (OSError, ValueError) as exc:
            raise CodecFailedError(f"{self.info.title} q{self.quality} failed: {exc}") from exc
