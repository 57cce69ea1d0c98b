"""``compressai-transtic demo``: TIC and TransTIC on bundled photos, judged by ResNet50.

For the labelled sample photographs (:mod:`compressai_transtic.data.samples`), each
prepared as in the paper (Resize 256 + CenterCrop 256), and for TIC and TransTIC (cls
prompts) at each quality: encode, decode, and print the real bitstream rate, the PSNR
and ResNet50's top-1 / top-5 against the sample labels, next to the uncompressed
reference.

Weights come from the torch hub cache or the network. When some cannot be had, the demo
prints which files to fetch (URL and cache path) and runs the same pipeline on randomly
initialised weights, with every printed line labelled ``[RANDOM WEIGHTS]``.
Results go to stdout; progress bars (tqdm) and log messages to stderr.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from typing import Any, Callable, List, Sequence, Tuple

import torch
from torchvision.models import ResNet50_Weights
from tqdm import tqdm

from ..console import RANDOM_TAG, print_error, setup_logging
from ..data import labelled_samples, load_sample
from ..devices import DeviceUnavailableError, check_device
from ..download import FileToFetch
from ..metrics import topk_accuracy
from ..protocol import classification_protocol
from ..tasks import get_task
from ..tasks.weights import DEFAULT_WEIGHTS, TaskWeightsUnavailableError
from ..trust import TrustStoreError
from ..zoo import ChecksumMismatchError, WeightsUnavailableError
from .codecs import CodecSpec, WeightsSource, code_image

__all__ = ["add_demo_arguments", "run_demo"]

logger = logging.getLogger(__name__)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``compressai-transtic demo``."""
    parser.description = (
        "Code the bundled sample photographs with TIC and TransTIC (classification prompts) "
        "and report rate, PSNR and ResNet50 top-1/top-5. Uses the released weights (torch hub "
        "cache or download); without them, runs on random weights and says so on every line."
    )
    parser.add_argument(
        "--qualities",
        type=int,
        nargs="+",
        default=[1, 4],
        choices=(1, 2, 3, 4),
        metavar="Q",
        help="quality levels 1..4 (default: 1 4)",
    )
    parser.add_argument("--crop", type=int, default=256, help="Resize + CenterCrop size (default 256)")
    parser.add_argument("--device", default="cpu", help="where the networks run: cpu, cuda ... (default cpu)")
    parser.add_argument("--random-weights", action="store_true", help="do not look for weights: random networks")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")


def _load_classifier(device: str, random_weights: bool, missing: List[FileToFetch]) -> Any:
    if not random_weights:
        task = get_task("cls", weights=DEFAULT_WEIGHTS, device=device)
        try:
            _ = task.network  # load the weights now
            return task
        except TaskWeightsUnavailableError as err:
            missing.append(err.to_fetch())
    task = get_task("cls", weights="random", device=device)
    _ = task.network
    return task


def _load_codecs(
    qualities: Sequence[int], device: str, random_weights: bool, missing: List[FileToFetch]
) -> List[Tuple[CodecSpec, Any]]:
    out = []
    points = [(arch, q) for arch in ("tic", "transtic") for q in qualities]
    for arch, q in tqdm(points, desc="loading codecs", unit="codec", leave=False):
        source = WeightsSource.zoo(random_weights)
        spec = CodecSpec(arch, arch, q, "cls" if arch == "transtic" else None, source)
        try:
            model = spec.load(device)
        except WeightsUnavailableError as err:
            missing.append(err.to_fetch(spec.released_weights()[0].title))
            spec = replace(spec, source=WeightsSource.RANDOM)
            model = spec.load(device)
        out.append((spec, model))
    return out


def run_demo(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """Run the demo; ``out`` receives every line (already labelled when random)."""
    setup_logging(args.verbose, args.random_weights)
    start = time.time()
    missing: List[FileToFetch] = []
    try:
        check_device(args.device)
        classifier = _load_classifier(args.device, args.random_weights, missing)
        codecs = _load_codecs(args.qualities, args.device, args.random_weights, missing)
    except (DeviceUnavailableError, ChecksumMismatchError, TrustStoreError, ValueError) as err:
        return print_error(str(err))  # a changed file is refused, never replaced by random
    random_weights = classifier.random_weights or any(spec.random_weights for spec, _ in codecs)
    if random_weights and not args.random_weights:
        setup_logging(args.verbose, True)
    tag = RANDOM_TAG if random_weights else ""

    def say(line: str = "") -> None:
        out(tag + line)

    _say_which_weights(say, missing, random_weights)
    _code_and_classify(say, classifier, codecs, args.crop)
    say(f"done in {time.time() - start:.0f} s")
    return 0


def _say_which_weights(say: Callable[[str], None], missing: Sequence[FileToFetch], random_weights: bool) -> None:
    if missing:
        say("some released weights are neither cached nor downloadable; fetch these files (URL -> cache path):")
        for file in missing:
            say(f"  {file}")
        say("meanwhile the demo runs on RANDOM WEIGHTS: the numbers below test the pipeline and mean nothing")
    elif random_weights:
        say("--random-weights: the numbers below test the pipeline and mean nothing")


def _code_and_classify(
    say: Callable[[str], None], classifier: Any, codecs: Sequence[Tuple[CodecSpec, Any]], crop: int
) -> None:
    """One line for the uncompressed photos, then one per codec: rate, PSNR, accuracy."""
    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    protocol = classification_protocol(crop)
    samples = labelled_samples()
    images = [protocol.prepare(load_sample(s))[None] for s in samples]
    labels = [s.labels for s in samples]
    say(
        f"{len(samples)} sample photos ({', '.join(s.name for s in samples)}), Resize {crop} + "
        f"CenterCrop {crop}; ResNet50 ({classifier.describe_weights()})"
    )

    def summary(batch: Sequence[torch.Tensor]) -> str:
        ranked = [classifier.predict(x, None)["top5"] for x in batch]
        top1 = 100 * topk_accuracy(ranked, labels, 1)
        top5 = 100 * topk_accuracy(ranked, labels, 5)
        names = ", ".join(f"{s.name}: {categories[r[0]]}" for s, r in zip(samples, ranked))
        return f"top-1 {top1:5.1f} %  top-5 {top5:5.1f} %  ({names})"

    say(f"{'uncompressed':<22} {'':>20}  " + summary(images))
    for spec, model in codecs:
        bar = tqdm(images, desc=f"{spec.label} q{spec.quality}", unit="img", leave=False)
        coded = [code_image(model, x, protocol, likelihood=False) for x in bar]
        bpp = sum(c.bpp for c in coded) / len(coded)
        psnr = sum(c.psnr for c in coded) / len(coded)
        name = f"{spec.label} q{spec.quality}" + (" (random)" if spec.random_weights else "")
        say(f"{name:<22} {bpp:6.3f} bpp {psnr:6.2f} dB  " + summary([c.x_hat for c in coded]))
