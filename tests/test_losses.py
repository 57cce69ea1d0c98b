"""Perceptual losses: registry, the facts-page formulas, gradients and frozen networks."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compressai_transtic import losses
from compressai_transtic.tasks.features import IMAGENET_MEAN, IMAGENET_STD


def fake_output(x: torch.Tensor, noise: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_hat = (x + noise * torch.randn(x.shape, generator=g)).requires_grad_()
    y = torch.rand(x.shape[0], 8, 4, 4, generator=g).clamp_min(0.01).requires_grad_()
    z = torch.rand(x.shape[0], 4, 1, 1, generator=g).clamp_min(0.01).requires_grad_()
    return {"x_hat": x_hat, "likelihoods": {"y": y, "z": z}}


def expected_bpp(output, x):
    n, _, h, w = x.shape
    total = sum(-torch.log2(lik.detach()).sum() for lik in output["likelihoods"].values())
    return float(total) / (n * h * w)


def test_criteria_are_registered_in_compressai_registry():
    from compressai.registry import CRITERIONS

    assert CRITERIONS["transtic-cls-perceptual"] is losses.ClassificationPerceptualLoss
    assert CRITERIONS["transtic-det-perceptual"] is losses.DetectionPerceptualLoss
    assert CRITERIONS["transtic-seg-perceptual"] is losses.SegmentationPerceptualLoss


def test_registration_is_idempotent_and_refuses_foreign_classes(monkeypatch):
    from compressai.registry import CRITERIONS

    losses.register_criteria()
    reloaded = importlib.reload(losses)  # a second import of the module registers again
    try:
        assert CRITERIONS["transtic-det-perceptual"] is reloaded.DetectionPerceptualLoss

        class Foreign(nn.Module):
            pass

        monkeypatch.setitem(CRITERIONS, "transtic-cls-perceptual", Foreign)
        with pytest.raises(RuntimeError, match="already registered"):
            reloaded.register_criteria()
    finally:
        monkeypatch.undo()
        reloaded.register_criteria()


def test_classification_loss_is_1000_lambda_mean_layer_mse_plus_bpp(random_task):
    task = random_task("cls")
    criterion = task.criterion(lmbda=0.0035)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    out_net = fake_output(x)
    x_hat = out_net["x_hat"].detach()
    x_hat[0, :, :4, :4] = 1.7  # outside [0, 1]: the loss sees it clamped
    out_net["x_hat"] = x_hat.requires_grad_()
    result = criterion(out_net, x)

    # independent computation with forward hooks on torchvision's ResNet50
    net = task.network
    feats = {}
    hooks = [
        getattr(net, f"layer{i}").register_forward_hook(lambda m, inp, out, i=i: feats.__setitem__(i, out))
        for i in range(1, 5)
    ]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        net((x - mean) / std)
        ref = dict(feats)
        net((x_hat.clamp(0, 1) - mean) / std)
        dec = dict(feats)
    for h in hooks:
        h.remove()
    d = sum(F.mse_loss(dec[i], ref[i]) for i in range(1, 5)) / 4
    bpp = expected_bpp(out_net, x)
    assert float(result["task_loss"].detach()) == pytest.approx(float(d), rel=1e-5)
    assert float(result["bpp_loss"].detach()) == pytest.approx(bpp, rel=1e-6)
    assert float(result["loss"].detach()) == pytest.approx(1000 * 0.0035 * float(d) + bpp, rel=1e-5)


@pytest.mark.parametrize("name", ["det", "seg"])
def test_detection_loss_is_one_fifth_of_the_fpn_mse_sum_plus_lambda_bpp(random_task, name):
    task = random_task(name)
    criterion = task.criterion(quality=1)
    assert criterion.lmbda == 2.0
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 96)
    out_net = fake_output(x, seed=1)
    result = criterion(out_net, x)

    net = task.network
    mean = torch.tensor(net.transform.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(net.transform.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = net.backbone((x - mean) / std)
        dec = net.backbone((out_net["x_hat"].detach().clamp(0, 1) - mean) / std)
    assert list(ref) == ["0", "1", "2", "3", "pool"]  # P2..P6
    d = 0.2 * sum(F.mse_loss(dec[k], ref[k]) for k in ref)
    bpp = expected_bpp(out_net, x)
    assert float(result["task_loss"].detach()) == pytest.approx(float(d), rel=1e-5)
    assert float(result["loss"].detach()) == pytest.approx(float(d) + 2.0 * bpp, rel=1e-5)
    assert set(result) >= {"loss", "bpp_loss", "task_loss", "mse_loss", "task_loss_p2", "task_loss_p6"}


@pytest.mark.parametrize("name", ["cls", "det"])
def test_loss_is_differentiable_wrt_x_hat_and_likelihoods_only(random_task, name):
    task = random_task(name)
    criterion = task.criterion(quality=2)
    criterion.train()  # the recognition network must stay in eval mode anyway
    assert criterion.training and not criterion.features.training
    assert not any(m.training for m in criterion.features.modules())
    x = torch.rand(1, 3, 64, 64)
    out_net = fake_output(x)
    criterion(out_net, x)["loss"].backward()
    assert out_net["x_hat"].grad is not None and out_net["x_hat"].grad.abs().sum() > 0
    assert out_net["likelihoods"]["y"].grad is not None
    assert all(p.grad is None for p in criterion.parameters())


def test_perfect_reconstruction_has_zero_task_loss(random_task):
    criterion = random_task("cls").criterion(quality=1)
    x = torch.rand(1, 3, 64, 64)
    out_net = {"x_hat": x.clone().requires_grad_(), "likelihoods": {"y": torch.full((1, 4, 2, 2), 0.5)}}
    result = criterion(out_net, x)
    assert float(result["task_loss"].detach()) == 0.0
    assert float(result["bpp_loss"].detach()) == pytest.approx(16 / (64 * 64))


def test_criterion_needs_lambda_or_quality(random_task):
    task = random_task("det")
    with pytest.raises(ValueError, match="needs lmbda or quality"):
        task.criterion()
    with pytest.raises(ValueError, match="default lambdas for qualities \\[1, 2, 3, 4\\], not 7"):
        task.criterion(quality=7)
    fe = task.feature_extractor()
    assert losses.DetectionPerceptualLoss(lmbda=0.3, features=fe).lmbda == 0.3
    with pytest.raises(ValueError, match="lmbda must be a finite number >= 0"):
        losses.DetectionPerceptualLoss(lmbda=float("nan"), features=fe)


def test_bpp_from_likelihoods_counts_bits_per_input_pixel():
    lik = {"y": torch.full((2, 3, 4, 4), 0.25), "z": torch.full((2, 1, 1, 1), 0.5)}
    bits = 2 * 3 * 4 * 4 * 2 + 2 * 1
    assert float(losses.bpp_from_likelihoods(lik, 2 * 32 * 32)) == pytest.approx(bits / (2 * 32 * 32))
    per_image = 3 * 4 * 4 * 2 + 1  # each image: 48 symbols of 2 bits, one of 1 bit
    assert losses.likelihood_bits(lik).tolist() == [per_image, per_image]
    assert not math.isnan(float(losses.bpp_from_likelihoods(lik, 1)))
