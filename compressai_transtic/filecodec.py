"""``compressai-transtic encode`` and ``decode``: images to ``.ttic`` files and back.

``encode IMAGE|FOLDER... -o OUT`` codes every image with one codec (``--model``,
``--task``, ``--quality``, ``--adapter`` and its ``--base-checkpoint``) into
``OUT/<name>.ttic``; ``decode FILE|FOLDER... -o OUT`` writes ``OUT/<name>.png``, taking
the codec, its weights and the image size from each file
(:mod:`compressai_transtic.container`). Folders are read recursively and their layout is
kept below ``OUT``.

Everything that can be checked is checked before a model is built: unreadable images
and damaged files are reported one line each, outputs that exist are refused without
``--force``, and two inputs that would write the same output are refused. Outputs are
written atomically, so a failed run leaves no partial file. Results go to stdout,
progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from .adapter_files import base_codec_hash, read_adapter
from .codec_choice import (
    MAX_SEED,
    SOURCES,
    BaseCodecMismatch,
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
from .console import printable, printer, report_error, shorten
from .container import SUFFIX, CodedFile, ContainerError, pack, unpack, weights_fingerprint
from .data.files import find_image_files
from .devices import check_device
from .evaluation.codecs import WeightsSource
from .fileio import atomic_write_bytes, check_writable_folder
from .filekinds import FileReadError, file_identity, read_regular_file, regular_file_problem
from .imageio import IMAGE_SUFFIXES, ImageReadError, read_image, write_png
from .state_dicts import ARCHITECTURES as CODEC_ARCHITECTURES

__all__ = [
    "BaseCodecMismatch",
    "CodecChoice",
    "CodecCommandError",
    "add_base_checkpoint_argument",
    "check_base_checkpoint",
    "add_decode_arguments",
    "add_encode_arguments",
    "load_codec",
    "run_decode",
    "run_encode",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# arguments
# ----------------------------------------------------------------------------------------


def _common_arguments(parser: argparse.ArgumentParser, what: str, adapter: str) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="PATH", help=f"{what} or folders of them")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--adapter", type=Path, metavar="PATH", help=adapter)
    parser.add_argument("--device", default="cpu", help="where the codec runs: cpu, cuda, cuda:1 ... (default cpu)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_max_pixels_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


#: which ``--model`` an adapter architecture goes with (see ``encode --help``)
MODEL_OF_ADAPTER = {"transtic": "transtic", "tic-sft": "tic", "tic-chsel": "tic", "tic-roi": "tic"}


def add_encode_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic encode``."""
    parser.description = "Code images into .ttic files (one per image)."
    _common_arguments(
        parser,
        "images (PNG, JPEG, WebP, TIFF, BMP, PPM)",
        "adapter file written by `train` (prompts, or a baseline's layers) to code with, on its base codec",
    )
    parser.add_argument(
        "--model",
        choices=("tic", "transtic"),
        help="codec: tic, or transtic with its released prompts (default transtic); with --adapter the adapter "
        "file says its codec and --model may be left out: transtic for prompts, tic for a baseline's layers "
        "(tic-sft, tic-chsel, tic-roi); a --model that names the other one is refused",
    )
    add_base_checkpoint_argument(parser, "the file records its name and hash, and decode asks for it")
    parser.add_argument(
        "--roi-map",
        type=Path,
        metavar="PATH",
        help="for a tic-roi --adapter: the quality map (an image, white = full quality, black = background; "
        "any size, it is resized to each input), or a folder holding one per input with the input's file stem",
    )
    parser.add_argument(
        "--task",
        choices=("cls", "det", "seg"),
        help="task of transtic's released prompts (default cls); with --adapter the task is the adapter's own, "
        "and a --task that differs from it is refused",
    )
    parser.add_argument(
        "-q",
        "--quality",
        type=int,
        choices=(1, 2, 3, 4),
        default=1,
        help="quality 1..4 (default 1); with --adapter, that of its released base codec (recorded only, with "
        "--base-checkpoint)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights (tests; results mean nothing); with --adapter, a random base codec "
        "(not with --base-checkpoint)",
    )
    parser.add_argument(
        "--seed", type=seed_argument, default=0, help="seed of --random-weights (default 0; at most 2^53 either way)"
    )


def add_decode_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic decode``."""
    parser.description = "Decode .ttic files into PNG images; the codec and its weights come from each file."
    _common_arguments(
        parser,
        ".ttic files",
        "the adapter file the files were coded with (they record its name and refuse another one)",
    )
    add_base_checkpoint_argument(parser, "needed by the files coded with one, which record its hash")


# ----------------------------------------------------------------------------------------
# inputs and outputs
# ----------------------------------------------------------------------------------------


def _collect(inputs: Sequence[Path], suffixes: Tuple[str, ...], what: str) -> List[Tuple[Path, Path]]:
    """``(file, path relative to the output folder without suffix)`` of every input."""
    found: List[Tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            files = find_image_files(item, suffixes)
            if not files:
                raise CodecCommandError(f"{item}: the folder holds no {what} (looked for {', '.join(suffixes)})")
            found += [(p, p.relative_to(item).with_suffix("")) for p in files]
        elif item.is_file():
            found.append((item, Path(item.stem)))
        elif item.exists():
            raise CodecCommandError(f"{item}: {regular_file_problem(item)}")
        else:
            raise CodecCommandError(f"{item}: no such file or folder")
    return found


def _plan_outputs(found: List[Tuple[Path, Path]], out: Path, suffix: str, force: bool) -> List[Tuple[Path, Path]]:
    if out.exists() and not out.is_dir():
        raise CodecCommandError(f"{out}: the output must be a folder")
    check_writable_folder(out, "output")
    inputs = {file_identity(source) for source, _ in found}
    plan: Dict[Path, Path] = {}
    existing: List[Path] = []
    for source, relative in found:
        target = out / relative.with_suffix(suffix)
        if target in plan:
            raise CodecCommandError(f"{plan[target]} and {source} would both be written to {target}")
        if target.exists() and file_identity(target) in inputs:  # even with --force: it would destroy an input
            raise CodecCommandError(f"{target} is one of the inputs and would be overwritten; choose another -o folder")
        if target.exists() and not force:
            existing.append(target)
        plan[target] = source
    if existing:
        raise CodecCommandError(existing_outputs_message(existing))
    return [(source, target) for target, source in plan.items()]


# ----------------------------------------------------------------------------------------
# codecs
# ----------------------------------------------------------------------------------------


def _encoder_codec(args: argparse.Namespace) -> CodecChoice:
    """The codec ``encode``'s options choose, checked against the adapter's file."""
    check_base_checkpoint(args)
    if args.adapter is None:
        model = args.model or "transtic"
        if model == "tic" and args.task:
            raise CodecCommandError("--task chooses transtic's released prompts; it is not for --model tic")
        task = (args.task or "cls") if model == "transtic" else None
        return CodecChoice(model, args.quality, task, WeightsSource.zoo(args.random_weights), args.seed)
    header = read_adapter(args.adapter)
    arch, task = header["arch"], header.get("task")
    expected = MODEL_OF_ADAPTER.get(arch)
    if args.model is not None and expected is not None and args.model != expected:
        raise CodecCommandError(
            f"--adapter {args.adapter} is a {arch} adapter, coded with --model {expected}, not --model "
            f"{args.model}; pass --model {expected} or leave --model out (the adapter says its codec)"
        )
    if args.task is not None and args.task != task:
        held = f"is for the task {task!r}" if task is not None else "records no task"
        raise CodecCommandError(
            f"--adapter {args.adapter} {held}, not --task {args.task}: an adapter codes for its own task; "
            "leave --task out"
        )
    if args.base_checkpoint is not None and args.random_weights:
        raise CodecCommandError(
            f"--random-weights would put the adapter on a random base codec, --base-checkpoint on "
            f"{args.base_checkpoint}: pass one of them"
        )
    base = args.base_checkpoint
    return CodecChoice(
        arch,
        args.quality,
        task,
        WeightsSource.ADAPTER,
        args.seed,
        args.adapter.name,
        args.random_weights,
        base=None if base is None else base.name,
        base_sha256=None if base is None else header["base_sha256"],
    )


# ----------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------


def _roi_map_files(
    location: Optional[Path], sources: Sequence[Path], arch: str, max_pixels: int
) -> Optional[Dict[Path, Path]]:
    """Input image -> its quality-map file (``--roi-map``), every map read once before any coding."""
    if location is None:
        return None
    if arch != "tic-roi":
        raise CodecCommandError(f"--roi-map is for a tic-roi --adapter, not for {arch}")
    if location.is_file():
        maps = {source: location for source in sources}
    elif location.is_dir():
        files = {p.stem: p for p in sorted(location.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        missing = [s.name for s in sources if s.stem not in files]
        if missing:
            raise CodecCommandError(f"--roi-map {location} holds no map named like {missing[:5]}; nothing was written")
        maps = {source: files[source.stem] for source in sources}
    else:
        raise CodecCommandError(f"--roi-map {location}: no such file or folder")
    for path in set(maps.values()):
        try:
            read_quality_map(path, max_pixels)
        except ImageReadError as exc:
            raise CodecCommandError(f"--roi-map: {exc}; nothing was written") from None
    return maps


def run_encode(args: argparse.Namespace) -> int:
    """``compressai-transtic encode``; returns the exit status."""
    try:
        plan = _plan_outputs(_collect(args.inputs, IMAGE_SUFFIXES, "images"), args.output, SUFFIX, args.force)
        bad = []
        for source, _ in tqdm(plan, desc="checking images", unit="img", leave=False, disable=args.no_progress):
            try:
                height, width = read_image(source, args.max_pixels)[0].shape[-2:]
            except ImageReadError as exc:
                bad.append(str(exc))
                continue
            problem = size_problem(height, width, args.max_pixels)
            if problem is not None:
                bad.append(f"{source}: {problem}")
        if bad:
            raise CodecCommandError(
                "\n".join(bad + [f"{len(bad)} of {len(plan)} images cannot be coded; nothing was written"])
            )
        codec = _encoder_codec(args)
        maps = _roi_map_files(args.roi_map, [source for source, _ in plan], codec.architecture, args.max_pixels)
        check_device(args.device)
        model = load_codec(codec, args.adapter, args.device, args.base_checkpoint)
        name, sha = codec.weights_name(), weights_fingerprint(model)
        description = {**codec.description(), "config": _prompt_config(model)}
        _check_decodable(description, name, sha)
    except (CodecCommandError, ValueError, OSError) as err:
        return report_error(err)
    out = printer(codec.random_weights)
    for source, target in tqdm(plan, desc="encoding", unit="img", disable=args.no_progress):
        try:
            x, notes = read_image(source, args.max_pixels)
            with torch.no_grad():
                extra = {} if maps is None else {"quality_map": read_quality_map(maps[source], args.max_pixels)}
                enc = model.compress(x.to(args.device), **extra)
            strings = tuple(s[0] for s in enc["strings"])
            data = pack(CodedFile(description, name, sha, x.shape[-2], x.shape[-1], strings))
            atomic_write_bytes(target, data)
        except (ValueError, OSError) as err:  # e.g. NaN in the image, an unwritable folder
            return report_error(ValueError(f"{source}: {err}; {target} was not written"))
        bpp = 8 * len(data) / (x.shape[-2] * x.shape[-1])
        note = f" ({'; '.join(notes)})" if notes else ""
        out(f"{source} -> {target}: {x.shape[-1]}x{x.shape[-2]}, {len(data)} bytes, {bpp:.4f} bpp{note}")
    return 0


def _check_decodable(description: Dict[str, Any], weights_name: str, weights_sha256: str) -> None:
    """Refuse, before anything is coded, a codec description that ``decode`` would not
    read back (an adapter whose task or file name cannot be stored, for instance)."""
    try:
        _codec_of(Path("the file"), unpack(pack(CodedFile(description, weights_name, weights_sha256, 1, 1, ()))))
    except (CodecCommandError, ContainerError) as err:
        raise CodecCommandError(
            f"decode could not read back what this codec would write ({err}); nothing was written"
        ) from None


def max_file_bytes(max_pixels: int) -> int:
    """The largest ``.ttic`` file read for images of at most ``max_pixels`` pixels: 64
    bits per pixel (far above any learned codec's rate), plus 1 MiB for the rest."""
    return 8 * max_pixels + (1 << 20)


def _read_coded(source: Path, max_pixels: int) -> CodedFile:
    """``source``, a regular file of at most :func:`max_file_bytes`, unpacked."""
    limit = max_file_bytes(max_pixels)
    try:
        data = read_regular_file(source, limit)
    except FileReadError as err:
        if err.size is None:
            raise ContainerError(str(err)) from None
        raise ContainerError(
            f"more than {limit} bytes, more than a .ttic of images of at most {max_pixels} pixels holds; "
            "raise --max-pixels if it is one"
        ) from None
    coded = unpack(data)
    problem = size_problem(coded.height, coded.width, max_pixels)
    if problem is not None:
        raise ContainerError(problem)
    return coded


def _read_files(plan: Iterable[Tuple[Path, Path]], max_pixels: int) -> List[Tuple[Path, Path, CodedFile]]:
    read, bad = [], []
    for source, target in plan:
        try:
            read.append((source, target, _read_coded(source, max_pixels)))
        except (ContainerError, OSError) as exc:
            bad.append(f"{source}: {exc}")
    if bad:
        raise CodecCommandError("\n".join(bad + [f"{len(bad)} file(s) cannot be decoded; nothing was written"]))
    return read


def _prompt_config(model: torch.nn.Module) -> Optional[dict]:
    """TransTIC's prompt configuration (the variant), ``None`` for TIC."""
    config = getattr(model, "config", None)
    return config.to_dict() if config is not None else None


_FIELD_TYPES: Dict[str, Any] = {
    "architecture": str,
    "quality": int,
    "task": (str, type(None)),
    "source": str,
    "seed": int,
    "adapter": (str, type(None)),
    "random_base": bool,
    "base": (str, type(None)),
    "base_sha256": (str, type(None)),
}

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _has_type(value: Any, kind: Any) -> bool:
    """``isinstance``, except that a boolean is no integer."""
    if isinstance(value, bool) and kind is int:
        return False
    return isinstance(value, kind)


def _codec_of(source: Path, coded: CodedFile) -> CodecChoice:
    fields = {k: v for k, v in coded.codec.items() if k != "config"}
    wrong = [k for k, v in fields.items() if k not in _FIELD_TYPES or not _has_type(v, _FIELD_TYPES[k])]
    if "seed" in fields and "seed" not in wrong and not abs(fields["seed"]) <= MAX_SEED:
        wrong.append("seed")
    if _base_problem(fields):
        wrong.append("base")
    shown = shorten(str(dict(coded.codec)), 200)
    if wrong or fields.get("architecture") not in CODEC_ARCHITECTURES or fields.get("source") not in SOURCES:
        raise CodecCommandError(f"{source}: unknown codec description {shown}")
    try:
        return CodecChoice(**fields)
    except TypeError:  # a field missing
        raise CodecCommandError(f"{source}: incomplete codec description {shown}") from None


def _base_problem(fields: Dict[str, Any]) -> bool:
    """Whether the base codec fields of a file's codec description contradict each other:
    ``base`` and ``base_sha256`` go together, with an adapter on no random base."""
    base, sha = fields.get("base"), fields.get("base_sha256")
    if base is None and sha is None:
        return False
    if base is None or sha is None or fields.get("source") != WeightsSource.ADAPTER or fields.get("random_base"):
        return True
    return not isinstance(sha, str) or _SHA256.fullmatch(sha) is None


def _decoding_base(source: Path, codec: CodecChoice, given: Optional[Path]) -> Optional[Path]:
    """The ``--base-checkpoint`` to decode ``source`` with: ``given`` for a file coded on
    one, ``None`` for the others; refused when the file and the option disagree."""
    if codec.source is not WeightsSource.ADAPTER:
        return None  # --adapter and --base-checkpoint concern adapter-coded files only
    if codec.base is not None and given is None:
        raise CodecCommandError(
            f"{source} was coded with the adapter {printable(codec.adapter)} on the base codec "
            f"{printable(codec.base)} (base sha256 {codec.base_sha256 and codec.base_sha256[:12]}...): "
            "pass that checkpoint with --base-checkpoint"
        )
    if codec.base is None and given is not None:
        raise CodecCommandError(
            f"{source} was coded with the adapter {printable(codec.adapter)} on {codec.base_words()}, not on a "
            f"--base-checkpoint: decode it without --base-checkpoint {given}"
        )
    return given


def _other_base(source: Path, codec: CodecChoice, given: Optional[Path], found: str) -> CodecCommandError:
    """``source`` was coded on another base codec than ``given`` (whose hash is ``found``)."""
    return CodecCommandError(
        f"{source} was coded on the base codec {printable(codec.base)} (base sha256 "
        f"{codec.base_sha256 and codec.base_sha256[:12]}...), but --base-checkpoint {given} is another one "
        f"(base sha256 {found[:12]}...); pass the base codec the file was coded with"
    )


def _load_decoder(source: Path, codec: CodecChoice, args: argparse.Namespace) -> Any:
    """The model that decodes ``source`` (coded with ``codec``), its base codec checked
    against the one the file records."""
    try:
        codec.check_adapter_given(args.adapter)
    except CodecCommandError as err:
        raise CodecCommandError(f"{source} was {err}") from None
    base = _decoding_base(source, codec, args.base_checkpoint)
    try:
        model = load_codec(codec, args.adapter, args.device, base)
    except BaseCodecMismatch as err:
        if codec.base_sha256 is None:
            raise
        if err.found == codec.base_sha256:  # the right base: the adapter is not the file's
            raise CodecCommandError(
                f"{source} was coded with the adapter {printable(codec.adapter)} on {printable(codec.base)}, but "
                f"--adapter {args.adapter} was trained on another base codec (base sha256 "
                f"{printable(err.trained_on[:12])}...); pass the adapter the file was coded with"
            ) from None
        raise _other_base(source, codec, base, err.found) from None
    if codec.base_sha256 is not None:
        found = base_codec_hash(model)
        if found != codec.base_sha256:
            raise _other_base(source, codec, base, found)
    return model


def run_decode(args: argparse.Namespace) -> int:
    """``compressai-transtic decode``; returns the exit status."""
    try:
        check_base_checkpoint(args)
        plan = _plan_outputs(_collect(args.inputs, (SUFFIX,), f"{SUFFIX} files"), args.output, ".png", args.force)
        files = _read_files(plan, args.max_pixels)
        check_device(args.device)
        models: Dict[Tuple[CodecChoice, str], Any] = {}
        for source, _, coded in files:
            codec = _codec_of(source, coded)
            if (codec, coded.weights_sha256) not in models:
                model = _load_decoder(source, codec, args)
                if _prompt_config(model) != coded.codec.get("config"):
                    raise CodecCommandError(
                        f"{source} was coded with the prompt configuration {coded.codec.get('config')}, "
                        f"but the model loaded here has {_prompt_config(model)}"
                    )
                if weights_fingerprint(model) != coded.weights_sha256:
                    raise CodecCommandError(
                        f"{source} was coded with {coded.weights_name} (sha256 {coded.weights_sha256[:16]}...), "
                        f"but the weights loaded here differ; decode it with those weights"
                    )
                model.max_decode_pixels = args.max_pixels
                models[(codec, coded.weights_sha256)] = model
    except (CodecCommandError, ValueError, OSError) as err:
        return report_error(err)
    status = 0
    for source, target, coded in tqdm(files, desc="decoding", unit="file", disable=args.no_progress):
        codec = _codec_of(source, coded)
        model = models[(codec, coded.weights_sha256)]
        strings = [[s] for s in coded.strings]
        try:
            with torch.no_grad():
                x_hat = model.decompress(strings, coded.latent_shape)["x_hat"]
            if tuple(x_hat.shape[-2:]) != (coded.height, coded.width):
                raise ContainerError(
                    f"the file says {coded.width}x{coded.height} pixels, its bitstream codes "
                    f"{x_hat.shape[-1]}x{x_hat.shape[-2]}: it was modified"
                )
            write_png(target, x_hat)
        except (ValueError, OSError) as exc:  # BitstreamError and friends, an unwritable folder
            status = report_error(ValueError(f"{source}: {exc}"))
            continue
        printer(codec.random_weights)(f"{source} -> {target}: {coded.width}x{coded.height}")
    return status
