"""Training data and randomness: discovery, checks, crops, batch order, sample-keyed noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from compressai_transtic.training.data import (
    DatasetError,
    GlobalBatchSampler,
    TrainingImages,
    UnreadableImageError,
    ValidationImages,
    check_images,
    find_images,
    load_rgb,
    split_holdout,
    unreadable_error,
)
from compressai_transtic.training.randomness import SampleKeyedRandomness, sample_key


def write_image(path: Path, size=(40, 30), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "imgs"
    write_image(root / "n01" / "a.png", seed=1)
    write_image(root / "n01" / "deep" / "b.jpg", seed=2)
    write_image(root / "n02" / "c.PNG", seed=3)
    write_image(root / ".hidden" / "d.png", seed=4)
    (root / "notes.txt").write_text("not an image")
    return root


def test_images_are_found_recursively_sorted_without_hidden_folders_or_other_files(folder):
    found = [p.relative_to(folder).as_posix() for p in find_images(folder)]
    assert found == ["n01/a.png", "n01/deep/b.jpg", "n02/c.PNG"]


def test_an_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no images"):
        find_images(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        find_images(tmp_path / "missing")


def test_unreadable_files_are_all_reported_by_name(folder):
    bad = folder / "n02" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    truncated = folder / "n02" / "truncated.png"
    good = write_image(folder / "n02" / "whole.png", size=(64, 64), seed=9)
    truncated.write_bytes(good.read_bytes()[:200])
    failures = check_images(find_images(folder), "header")
    assert sorted(p.name for p, _ in failures) == ["broken.png", "truncated.png"]
    err = unreadable_error(failures)
    assert isinstance(err, UnreadableImageError) and str(bad) in str(err) and str(truncated) in str(err)
    with pytest.raises(UnreadableImageError, match="broken.png"):
        load_rgb(bad)


def test_an_image_unreadable_in_a_loader_worker_is_reported_as_in_the_main_process(folder):
    whole = write_image(folder / "n02" / "whole.jpg", size=(96, 96), seed=9)
    cut = folder / "n02" / "cut.jpg"  # passes the header check, fails to decode
    cut.write_bytes(whole.read_bytes()[: 2 * whole.stat().st_size // 3])
    data = TrainingImages([cut], patch_size=32, crop="center", seed=0)
    with pytest.raises(UnreadableImageError) as in_process:
        data[(0, 0)]
    loader = torch.utils.data.DataLoader(data, sampler=[(0, 0)], num_workers=1)
    with pytest.raises(UnreadableImageError) as in_worker:
        next(iter(loader))
    assert str(in_worker.value) == str(in_process.value)
    assert str(cut) in str(in_worker.value) and "Traceback" not in str(in_worker.value)


def test_global_batches_are_the_same_whatever_the_number_of_processes():
    one = GlobalBatchSampler(20, 4, rank=0, world_size=1, seed=3)
    two = [GlobalBatchSampler(20, 4, rank=r, world_size=2, seed=3) for r in range(2)]
    for epoch in (0, 1):
        one.set_epoch(epoch)
        for s in two:
            s.set_epoch(epoch)
        single = list(one)
        split = [a + b for a, b in zip(*[list(s) for s in two])]
        assert single == split and len(single) == 5
    one.set_epoch(0)
    first = list(one)
    one.set_epoch(1)
    assert list(one) != first  # a new order each epoch


def test_an_epoch_can_start_after_completed_steps_and_draw_a_subset():
    s = GlobalBatchSampler(10, 2, seed=0, samples_per_epoch=6)
    assert s.steps_per_epoch == 3
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_step=1)
    assert list(s) == full[1:] and len(s) == 2
    assert len({i for b in full for i, _ in b}) == 6


def test_too_few_images_or_an_uneven_split_are_refused():
    with pytest.raises(DatasetError, match="fewer than one batch of 8"):
        GlobalBatchSampler(5, 8)
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        GlobalBatchSampler(20, 3, rank=0, world_size=2)


def test_random_crops_and_flips_are_a_function_of_seed_epoch_and_index(folder):
    paths = find_images(folder)
    ds = TrainingImages(paths, patch_size=16, crop="random", seed=5)
    a, key = ds[(1, 3)]
    b, _ = ds[(1, 3)]
    assert a.shape == (3, 16, 16) and torch.equal(a, b) and key == sample_key(5, 3, 1)
    others = [ds[(1, e)][0] for e in range(8)]
    assert any(not torch.equal(a, o) for o in others)
    # images smaller than the patch are enlarged, not refused
    big, _ = TrainingImages(paths, patch_size=48, crop="random", seed=5)[(0, 0)]
    assert big.shape == (3, 48, 48)


def test_center_crops_resize_the_shorter_side_then_cut_the_middle(folder):
    paths = find_images(folder)
    x, _ = TrainingImages(paths, 24, "center", seed=0)[(0, 0)]
    v = ValidationImages(paths, 24, "center")[0]
    assert x.shape == v.shape == (3, 24, 24) and torch.equal(x, v)
    assert ValidationImages(paths, 24, "full")[0].shape == (3, 30, 40)


def test_holdout_split_is_disjoint_and_reproducible(folder):
    paths = [Path(f"img{i}.png") for i in range(10)]
    train, val = split_holdout(paths, 0.3, seed=1)
    assert len(val) == 3 and not set(train) & set(val) and split_holdout(paths, 0.3, seed=1) == (train, val)
    with pytest.raises(DatasetError, match="no validation"):
        split_holdout(paths[:2], 0.1, seed=0)


# ------------------------------------------------------------------ sample-keyed randomness


class NoisyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from compressai.entropy_models import EntropyBottleneck, GaussianConditional
        from timm.layers import DropPath

        self.eb = EntropyBottleneck(3)
        self.gc = GaussianConditional(None)
        self.drop = DropPath(0.5)

    def forward(self, x):
        z, _ = self.eb(x)
        y, _ = self.gc(x, torch.ones_like(x))
        return z, y, self.drop(torch.ones_like(x))


def test_training_noise_of_a_sample_does_not_depend_on_the_rest_of_the_batch():
    model = NoisyModel().train()
    rng = SampleKeyedRandomness(model)
    x = torch.zeros(3, 3, 4, 5)
    with rng.batch([10, 11, 12]):
        z3, y3, d3 = model(x)
    with rng.batch([11]):
        z1, y1, d1 = model(x[1:2])
    assert torch.equal(z3[1:2], z1) and torch.equal(y3[1:2], y1) and torch.equal(d3[1:2], d1)
    assert not torch.equal(y3[0], y3[1])
    noise = y3 - x
    assert noise.abs().max() <= 0.5 and noise.std() > 0.2
    assert set(d3.unique().tolist()) <= {0.0, 2.0}  # kept paths scaled by 1 / keep probability


def test_keyed_randomness_refuses_use_outside_a_batch_and_unsupported_modules():
    model = NoisyModel().train()
    rng = SampleKeyedRandomness(model)
    with pytest.raises(RuntimeError, match="outside SampleKeyedRandomness.batch"):
        model(torch.zeros(1, 3, 2, 2))
    model.eval()
    model(torch.zeros(1, 3, 2, 2))  # eval mode draws nothing
    rng.remove()
    with pytest.raises(ValueError, match="Dropout"):
        SampleKeyedRandomness(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))


# ------------------------------------------------------------------ mixed precision


def test_mixed_precision_is_off_on_cpu_and_refused_when_forced():
    from compressai_transtic.training.precision import resolve_precision

    assert resolve_precision("auto", torch.device("cpu")).mode == "off"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_precision("bf16", torch.device("cpu"))


def test_entropy_models_compute_likelihoods_in_float32_under_autocast():
    from compressai_transtic.training.precision import entropy_models_in_float32

    model = NoisyModel().eval()
    x = torch.randn(2, 3, 4, 4)
    remove = entropy_models_in_float32(model, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, lik_z = model.eb(x.bfloat16())
        y, lik_y = model.gc(x.bfloat16(), torch.ones_like(x).bfloat16())
    assert lik_z.dtype == lik_y.dtype == torch.float32
    remove()
    assert "forward" not in model.eb.__dict__
