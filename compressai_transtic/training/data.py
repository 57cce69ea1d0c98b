"""Training and validation images: discovery, up-front checks, crops, batch order.

Any folder of images serves: it is searched recursively, so an ImageNet-style tree
(``train/<class>/<image>``), COCO's ``train2017/`` (annotations are not needed: the
perceptual losses compare features of the input and of its reconstruction) or your
own images all work. Labels are not used.

Crops follow the paper (see :data:`~compressai_transtic.training.config.CROP_MODES`):

- ``center``: resize the shorter side to the patch size (bilinear, antialiased),
  then take the central square (ImageNet training);
- ``random``: a random square of the patch size, flipped horizontally with
  probability 1/2 (COCO training). Images whose shorter side is smaller than the
  patch are first resized so that it equals the patch size.

Every random choice (which images an epoch uses, their order, crop offsets, flips) is
a function of ``(seed, epoch, index)``, so the data a run sees does not depend on the
number of processes or data-loading workers, nor on interruptions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import functional as TF

from ..data.files import UnreadableFolderError, check_image, find_image_files
from ..data.files import check_images as check_files
from ..data.subset import evenly_spaced
from ..filekinds import ImageCheck
from ..imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageReadError, read_rgb8
from ..strenum import parse_choice
from .config import CropMode, ValidationCrop, option_ref
from .distributed import DistributedContext
from .randomness import mix_seed, sample_key, uniform01

__all__ = [
    "DatasetError",
    "GlobalBatchSampler",
    "TrainingImages",
    "UnreadableImageError",
    "ValidationImages",
    "check_images",
    "check_images_everywhere",
    "collate_training",
    "find_images",
    "load_rgb",
    "split_holdout",
    "training_and_validation_images",
]

logger = logging.getLogger(__name__)

# salts that separate the random streams derived from the same (seed, epoch, index)
_SALT_ORDER = 0x0D
_SALT_TOP, _SALT_LEFT, _SALT_FLIP = 0x70, 0x1E, 0xF1
_SALT_HOLDOUT = 0x4D


class DatasetError(ValueError):
    """A dataset that cannot be used (missing, empty, too small, unreadable files)."""


class UnreadableImageError(DatasetError):
    """Image files that cannot be read.

    Attributes:
        paths: the unreadable files (all of them found by the check; empty for an error
            raised in a ``DataLoader`` worker process, which passes on its message only).
    """

    def __init__(self, message: str, paths: Sequence[Path] = ()) -> None:
        # A worker's error is rebuilt in the main process from its traceback text
        # ("Caught ... in DataLoader worker process 0. Original Traceback ..."): keep
        # the original message, which says which file and what to do.
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)
        self.paths = list(paths)


# ----------------------------------------------------------------------------------------
# discovery and checks
# ----------------------------------------------------------------------------------------


def find_images(root: Union[str, os.PathLike], what: str = "training") -> List[Path]:
    """Every image file under ``root`` (recursively, hidden names skipped), each file once,
    sorted (:func:`~compressai_transtic.data.files.find_image_files`: links are followed,
    loops and aliases of the root are not walked twice).

    Args:
        root: the folder.
        what: what the images are for (used in messages).

    Raises:
        DatasetError: ``root`` is not a folder or holds no image files.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{what} dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{what} dataset {root} is not a folder; pass the folder that holds the images")
    try:
        paths = find_image_files(root, IMAGE_SUFFIXES)
    except UnreadableFolderError as exc:
        raise DatasetError(f"{what} dataset: {exc}") from None
    if not paths:
        raise DatasetError(
            f"{what} dataset folder {root} holds no images (looked recursively for files ending in "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    return paths


def check_images(
    paths: Sequence[Path],
    mode: ImageCheck = ImageCheck.HEADER,
    threads: int = 8,
    progress: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> List[Tuple[Path, str]]:
    """Find the files among ``paths`` that cannot be trained on.

    Args:
        paths: image files.
        mode: an :class:`~compressai_transtic.filekinds.ImageCheck` (or its value; see
            :func:`~compressai_transtic.data.files.check_image`).
        threads: parallel readers.
        progress: show a tqdm bar.
        max_pixels: the largest accepted image.

    Returns:
        ``(path, reason)`` of every unreadable file, in ``paths`` order.
    """
    mode = parse_choice(ImageCheck, mode, "image check")
    if mode is ImageCheck.OFF:
        return []
    return check_files(
        paths, lambda p: check_image(p, mode, max_pixels), threads, progress, desc=f"checking images ({mode})"
    )


def unreadable_error(failures: Sequence[Tuple[Path, str]], what: str = "training") -> UnreadableImageError:
    """The error that reports unreadable files, one line per file."""
    lines = "\n".join(f"  {p}: {r}" for p, r in failures)
    return UnreadableImageError(
        f"{len(failures)} {what} image file(s) cannot be read:\n{lines}\nRemove or replace them "
        "(or move them out of the dataset folder) and start again.",
        [p for p, _ in failures],
    )


def load_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image at ``path`` as 8-bit PIL RGB (:func:`~compressai_transtic.imageio.read_rgb8`:
    wide integer images scaled, not clipped).

    Raises:
        UnreadableImageError: naming the file.
    """
    try:
        return read_rgb8(path, max_pixels)
    except ImageReadError as exc:
        raise UnreadableImageError(f"cannot read image {exc}", [path]) from exc


def training_and_validation_images(
    dataset: str,
    val_dataset: Optional[str],
    val_fraction: float,
    val_limit: Optional[int],
    seed: int,
) -> Tuple[List[Path], List[Path]]:
    """The training images, and the validation images: another folder's, or a held-out
    fraction of the training folder's (by ``seed``), at most ``val_limit`` of them spread
    evenly.

    Raises:
        DatasetError: a missing or empty folder, or a split that leaves one side empty.
    """
    paths = find_images(dataset, "training")
    val_paths: List[Path] = []
    if val_dataset:
        val_paths = find_images(val_dataset, "validation")
    elif val_fraction:
        paths, val_paths = split_holdout(paths, val_fraction, seed)
    return paths, validation_subset(val_paths, val_limit) if val_paths else []


def check_images_everywhere(
    paths: Sequence[Path], mode: ImageCheck, ctx: DistributedContext, progress: bool, max_pixels: int
) -> None:
    """Every process checks its share of ``paths``; every process learns of every failure.

    Raises:
        UnreadableImageError: on every process, listing all the unreadable files.
    """
    mine = [paths[i] for i in shard(list(range(len(paths))), ctx.rank, ctx.world_size)]
    failures = check_images(mine, mode, progress=progress and ctx.is_main and len(mine) > 1000, max_pixels=max_pixels)
    if ctx.distributed:
        gathered = ctx.gather_objects([(str(p), r) for p, r in failures])
        failures = sorted((Path(p), r) for part in gathered for p, r in part)
    if failures:
        raise unreadable_error(failures)


def split_holdout(paths: Sequence[Path], fraction: float, seed: int) -> Tuple[List[Path], List[Path]]:
    """Split ``paths`` into (training, validation) with ``fraction`` held out, by ``seed``.

    Raises:
        DatasetError: the split would leave one side empty.
    """
    n = len(paths)
    count = int(round(fraction * n))
    if count < 1 or count >= n:
        raise DatasetError(
            f"{option_ref('val_fraction', fraction)} of {n} images leaves "
            f"{'no validation' if count < 1 else 'no training'} images; change {option_ref('val_fraction')} "
            f"or pass {option_ref('val_dataset')}"
        )
    g = torch.Generator().manual_seed(mix_seed(seed, _SALT_HOLDOUT))
    held = set(torch.randperm(n, generator=g)[:count].tolist())
    train = [p for i, p in enumerate(paths) if i not in held]
    val = [p for i, p in enumerate(paths) if i in held]
    return train, val


# ----------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------


def _to_tensor(img: Image.Image) -> Tensor:
    return TF.to_tensor(img)


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    img = TF.resize(img, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(img, [size, size])


class TrainingImages(Dataset):
    """Training crops, indexed by ``(index, epoch)`` pairs (see :class:`GlobalBatchSampler`).

    Args:
        paths: image files.
        patch_size: side of the square crops.
        crop: a :class:`~.config.CropMode` (or its value).
        seed: seed of the crop positions and flips.
        max_pixels: the largest image read.

    Returns (per item):
        ``(image (3, patch, patch) in [0, 1], sample key)``; the key seeds every random
        draw made for this sample (see :func:`~.randomness.sample_key`).
    """

    def __init__(
        self, paths: Sequence[Path], patch_size: int, crop: CropMode, seed: int, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> None:
        self.paths = list(paths)
        self.patch_size = int(patch_size)
        self.crop = parse_choice(CropMode, crop, "crop mode")
        self.seed = int(seed)
        self.max_pixels = int(max_pixels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: Tuple[int, int]) -> Tuple[Tensor, int]:
        index, epoch = item
        key = sample_key(self.seed, epoch, index)
        img = load_rgb(self.paths[index], self.max_pixels)
        p = self.patch_size
        if self.crop is CropMode.CENTER:
            img = _resize_center_crop(img, p)
        else:
            if min(img.size) < p:
                img = TF.resize(img, p, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            w, h = img.size
            top = int(uniform01(key, _SALT_TOP) * (h - p + 1))
            left = int(uniform01(key, _SALT_LEFT) * (w - p + 1))
            img = img.crop((left, top, left + p, top + p))
            if uniform01(key, _SALT_FLIP) < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _to_tensor(img), key


class ValidationImages(Dataset):
    """Validation images: central crops of ``patch_size`` or whole images.

    Args:
        paths: image files.
        patch_size: crop side for ``center``.
        crop: a :class:`~.config.ValidationCrop` (or its value).
        max_pixels: the largest image read.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        patch_size: int,
        crop: ValidationCrop = ValidationCrop.CENTER,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.paths = list(paths)
        self.patch_size = int(patch_size)
        self.crop = parse_choice(ValidationCrop, crop, "validation crop")
        self.max_pixels = int(max_pixels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        img = load_rgb(self.paths[index], self.max_pixels)
        if self.crop is ValidationCrop.CENTER:
            img = _resize_center_crop(img, self.patch_size)
        return _to_tensor(img)


def collate_training(batch: Sequence[Tuple[Tensor, int]]) -> Tuple[Tensor, Tensor]:
    """Stack crops; keys become an int64 tensor."""
    images = torch.stack([b[0] for b in batch])
    keys = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    return images, keys


class GlobalBatchSampler(Sampler[List[Tuple[int, int]]]):
    """Batches of ``(index, epoch)`` for one process of a (possibly distributed) run.

    Epoch ``e`` draws a permutation of the dataset from ``(seed, e)``, keeps its first
    ``samples_per_epoch`` entries, and cuts them into global batches of ``global_batch``
    (the incomplete last one is dropped). Process ``rank`` of ``world_size`` gets the
    ``rank``-th contiguous slice of every global batch, so the union over processes is
    exactly the batch a single process would use.

    Args:
        num_items: dataset size.
        global_batch: images per optimisation step over all processes.
        rank: this process.
        world_size: number of processes (must divide ``global_batch``).
        seed: seed of the order.
        samples_per_epoch: images per epoch (default: all).

    Raises:
        DatasetError: fewer images than one global batch.
        ValueError: ``global_batch`` not divisible by ``world_size``.
    """

    def __init__(
        self,
        num_items: int,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        samples_per_epoch: Optional[int] = None,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(
                f"the global batch size {global_batch} must be divisible by the number of processes "
                f"{world_size} (every process takes an equal share)"
            )
        self.num_items = int(num_items)
        self.samples = min(self.num_items, samples_per_epoch or self.num_items)
        if self.samples < global_batch:
            raise DatasetError(
                f"the training set has {self.num_items} images"
                + (f" ({self.samples} per epoch)" if self.samples != self.num_items else "")
                + f", fewer than one batch of {global_batch}; add images or lower {option_ref('batch_size')}"
            )
        self.global_batch = int(global_batch)
        self.local_batch = self.global_batch // world_size
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.seed = int(seed)
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.samples // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch to iterate, starting after ``start_step`` completed steps."""
        self.epoch = int(epoch)
        self.start_step = int(start_step)

    def epoch_order(self, epoch: int) -> List[int]:
        """The dataset indices of an epoch, in global order."""
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, _SALT_ORDER))
        return torch.randperm(self.num_items, generator=g)[: self.samples].tolist()

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        order = self.epoch_order(self.epoch)
        b, lb = self.global_batch, self.local_batch
        for step in range(self.start_step, self.steps_per_epoch):
            chunk = order[step * b : (step + 1) * b]
            yield [(i, self.epoch) for i in chunk[self.rank * lb : (self.rank + 1) * lb]]

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start_step)


def validation_subset(paths: Sequence[Path], limit: Optional[int]) -> List[Path]:
    """At most ``limit`` images, evenly spaced over ``paths``."""
    return evenly_spaced(list(paths), limit)


def shard(items: Sequence[int], rank: int, world_size: int) -> List[int]:
    """The items of one process: every ``world_size``-th, starting at ``rank``."""
    return list(items[rank::world_size])
