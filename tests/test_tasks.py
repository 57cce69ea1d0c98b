"""Tasks: plugin discovery, networks, weights handling and feature extractors."""

from __future__ import annotations

import argparse
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from compressai_transtic import tasks
from compressai_transtic.console import CommandError
from compressai_transtic.evaluation.selection import dataset_kind, task_classes
from compressai_transtic.tasks import Task, available_tasks, get_task, get_task_class
from compressai_transtic.tasks.base import DatasetKind
from compressai_transtic.tasks.weights import TaskWeightsUnavailableError

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- discovery
def test_builtin_tasks_are_available():
    assert {"cls", "det", "seg", "fidelity"} <= set(available_tasks())
    assert get_task_class("det").__name__ == "DetectionTask"


def test_the_builtin_tasks_are_the_entry_points_that_pyproject_declares():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][tasks.ENTRY_POINT_GROUP]
    assert {name: tasks._task_table()[name] for name in declared} == declared  # installed as declared
    for name, target in declared.items():
        cls = get_task_class(name)
        assert f"{cls.__module__}:{cls.__qualname__}" == target and cls.name == name


def _install_fake_distribution(tmp_path: Path, name: str, entry_points: str, module: str = "") -> Path:
    site = tmp_path / f"site_{name}"
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    if module:
        (site / f"{name}_tasks.py").write_text(module)
    return site


TOY_TASK = """
from compressai_transtic.tasks.base import Task

class ToyTask(Task):
    name = "toy"
    title = "a plugin task"
    metric_names = ("score",)
    primary_metric = "score"
    default_lambdas = {1: 0.5}
    dataset_kind = "classification"
"""


def test_a_third_party_task_is_found_through_the_entry_point_group(tmp_path, monkeypatch):
    site = _install_fake_distribution(
        tmp_path, "toyplugin", "[compressai_transtic.tasks]\ntoy = toyplugin_tasks:ToyTask\n", TOY_TASK
    )
    monkeypatch.syspath_prepend(str(site))
    assert "toy" in available_tasks()
    task = get_task("toy", weights="random")
    assert isinstance(task, Task) and task.name == "toy" and task.lmbda(1) == 0.5
    monkeypatch.delitem(sys.modules, "toyplugin_tasks", raising=False)


def test_the_dataset_a_plugin_task_declares_is_read_as_its_kind_or_refused_naming_the_task(tmp_path, monkeypatch):
    site = _install_fake_distribution(
        tmp_path,
        "kindplugin",
        "[compressai_transtic.tasks]\ntoy = kindplugin_tasks:ToyTask\nclip = kindplugin_tasks:VideoTask\n",
        TOY_TASK + "\n\nclass VideoTask(ToyTask):\n    name = 'clip'\n    dataset_kind = 'video'\n",
    )
    monkeypatch.syspath_prepend(str(site))
    try:
        assert dataset_kind(get_task_class("toy")) is DatasetKind.CLASSIFICATION
        with pytest.raises(
            CommandError,
            match=r"task 'clip' \(kindplugin_tasks.VideoTask\) declares dataset_kind "
            r"'video'; expected one of classification, coco, images",
        ):
            task_classes(argparse.Namespace(task=["clip"], annotations=None, labels=None))
    finally:
        monkeypatch.delitem(sys.modules, "kindplugin_tasks", raising=False)
    assert [dataset_kind(get_task_class(n)) for n in ("cls", "det", "fidelity")] == list(DatasetKind)


def test_unknown_task_names_list_the_available_ones():
    with pytest.raises(KeyError, match="available tasks: cls, det, fidelity, seg"):
        get_task("depth")


# ---------------------------------------------------------------------------- task settings
def test_paper_lambdas_and_training_defaults():
    det, seg, cls = get_task_class("det"), get_task_class("seg"), get_task_class("cls")
    assert det.default_lambdas == seg.default_lambdas == {1: 2.0, 2: 1.0, 3: 0.5, 4: 0.2}
    assert cls.default_lambdas == {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.013}
    for t, crop, batch in ((cls, "center", 16), (det, "random", 8), (seg, "random", 8)):
        d = t.training_defaults
        assert {"patch_size", "batch_size", "epochs", "lr", "crop"} <= set(d)
        assert (d["patch_size"], d["batch_size"], d["lr"], d["crop"]) == (256, batch, 1e-4, crop)
    assert det.training_defaults["epochs"] == 40
    assert (cls.primary_metric, det.primary_metric, seg.primary_metric) == ("top1", "bbox-AP", "segm-AP")


def test_tasks_reject_unsupported_backends():
    with pytest.raises(ValueError, match="supports the backends torchvision"):
        get_task("cls", weights="random", backend="detectron2")


def test_detectron2_backend_without_detectron2_says_how_to_install_it():
    try:
        import detectron2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("detectron2 is installed")
    with pytest.raises(ImportError, match="backend 'detectron2' needs detectron2.*detectron2.readthedocs.io"):
        get_task("det", weights="random", backend="detectron2")


# ---------------------------------------------------------------------------- networks
@pytest.mark.parametrize("name", ["cls", "det", "seg"])
def test_networks_are_frozen_in_eval_mode(random_task, name):
    net = random_task(name).network
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize(
    "name,builder",
    [
        ("cls", "resnet50"),
        ("det", "fasterrcnn_resnet50_fpn"),
        ("seg", "maskrcnn_resnet50_fpn"),
    ],
)
def test_networks_have_the_layout_of_torchvisions_weight_files(random_task, name, builder):
    """Same keys and shapes as torchvision's own model, so its weight files load strictly."""
    import torchvision.models as tvm
    import torchvision.models.detection as tvd

    fn = getattr(tvm, builder, None) or getattr(tvd, builder)
    kwargs = {"weights": None} if name == "cls" else {"weights": None, "weights_backbone": None}
    reference = {
        k: tuple(v.shape) for k, v in fn(**kwargs).state_dict().items() if not k.endswith("num_batches_tracked")
    }
    ours = {k: tuple(v.shape) for k, v in random_task(name).network.state_dict().items()}
    if name == "cls":
        ours = {k: v for k, v in ours.items() if not k.endswith("num_batches_tracked")}
    assert ours == reference


def test_random_networks_are_reproducible_from_their_seed():
    a = get_task("cls", weights="random", seed=3).build_network()
    b = get_task("cls", weights="random", seed=3).build_network()
    assert torch.equal(a.conv1.weight, b.conv1.weight)


def test_weights_from_an_explicit_state_dict_file(random_task, tmp_path):
    net = random_task("cls").network
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["fc.bias"] = torch.arange(1000, dtype=torch.float32)
    path = tmp_path / "my_resnet50.pth"
    torch.save({"state_dict": state}, path)
    loaded = get_task("cls", weights=path).build_network()
    assert torch.equal(loaded.fc.bias, state["fc.bias"])
    with pytest.raises(FileNotFoundError, match="missing.pth: no such file"):
        get_task("cls", weights=tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="a folder, not a regular file"):
        get_task("cls", weights=tmp_path)


def test_default_weights_come_from_the_torch_hub_cache_without_download(random_task, tmp_path, monkeypatch):
    from compressai_transtic.tasks.classification import RESNET50_WEIGHTS

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / RESNET50_WEIGHTS.filename
    cached.parent.mkdir(parents=True)
    state = random_task("cls").network.state_dict()
    torch.save(state, cached)

    def no_network(*args, **kwargs):
        raise AssertionError("must not download a cached file")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    net = get_task("cls").build_network()
    assert torch.equal(net.conv1.weight, state["conv1.weight"])


def test_missing_default_weights_are_downloaded_into_the_hub_cache(random_task, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = random_task("cls").network.state_dict()
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix))
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    net = get_task("cls").build_network()
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert calls == [("https://download.pytorch.org/models/resnet50-0676ba61.pth", expected, "0676ba61")]
    assert torch.equal(net.fc.weight, state["fc.weight"])
    assert capsys.readouterr().out == ""  # nothing on stdout (CLIs print results there)


@pytest.mark.parametrize(
    "name,filename",
    [
        ("cls", "resnet50-0676ba61.pth"),
        ("det", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"),
        ("seg", "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"),
    ],
)
def test_offline_without_weights_names_the_file_and_where_to_put_it(tmp_path, monkeypatch, name, filename):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(TaskWeightsUnavailableError) as info:
        get_task(name).build_network()
    err = info.value
    expected = tmp_path / "hub" / "checkpoints" / filename
    assert err.filename == filename and err.path == expected
    assert err.url == f"https://download.pytorch.org/models/{filename}"
    message = str(err)
    assert filename in message and str(expected) in message and err.url in message
    assert "--task-weights" in message


# ---------------------------------------------------------------------------- features
def test_resnet50_features_f1_to_f4_have_strides_4_to_32(random_task):
    fe = random_task("cls").feature_extractor()
    assert fe.names == ("layer1", "layer2", "layer3", "layer4")
    assert fe.strides == (4, 8, 16, 32) and fe.channels == (256, 512, 1024, 2048)
    feats = fe(torch.rand(1, 3, 128, 192))
    for (name, f), stride, ch in zip(feats.items(), fe.strides, fe.channels):
        assert tuple(f.shape) == (1, ch, 128 // stride, 192 // stride), name


@pytest.mark.parametrize("name", ["det", "seg"])
def test_fpn_features_p2_to_p6_have_strides_4_to_64(random_task, name):
    fe = random_task(name).feature_extractor()
    assert fe.names == ("p2", "p3", "p4", "p5", "p6")
    assert fe.strides == (4, 8, 16, 32, 64) and fe.channels == (256,) * 5
    feats = fe(torch.rand(1, 3, 256, 128))
    for (n, f), stride in zip(feats.items(), fe.strides):
        assert tuple(f.shape) == (1, 256, 256 // stride, 128 // stride), n


def test_feature_extractors_stay_frozen_in_eval_mode(random_task):
    fe = random_task("cls").feature_extractor()
    fe.train()
    assert not fe.training and not any(m.training for m in fe.modules())
    assert not any(p.requires_grad for p in fe.parameters())
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    fe(x)["layer4"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- predictions
def test_detection_without_resize_matches_torchvisions_own_forward(random_task):
    """On an image already at the protocol's size, detect() = torchvision's model(images)."""
    task = get_task("det", weights="random", short_edge=64, max_size=96)
    net = task.network
    net.roi_heads.score_thresh = 0.0  # random weights: keep low-score detections to compare
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 96)
    ours = task.detect(x, (64, 96))
    theirs = net([x[0]])[0]
    assert len(theirs["boxes"]) > 0
    assert torch.allclose(ours["boxes"], theirs["boxes"], atol=1e-4)
    assert torch.equal(ours["labels"], theirs["labels"])
    # reported at the original size: boxes scale with it
    big = task.detect(x, (128, 192))
    assert torch.allclose(big["boxes"], 2 * ours["boxes"], atol=1e-3)


def test_classification_predicts_the_top5_indices(random_task):
    task = random_task("cls")
    x = torch.rand(1, 3, 64, 64)
    pred = task.predict(x, None)
    assert pred["top5"] == task.logits(x).topk(5).indices[0].tolist()


def test_saliency_maps_mark_where_the_finest_features_are_strongest():
    from compressai_transtic.tasks import get_task

    task = get_task("cls", weights="random", seed=0)
    x = torch.full((2, 3, 64, 96), 0.5)
    x[1, :, 8:40, 16:48] = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = task.saliency(x)
    assert maps.shape == (2, 1, 64, 96) and maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.flatten(1).amax(1), torch.ones(2))
    # the textured square draws the features of the second image
    assert maps[1, 0, 8:40, 16:48].mean() > 2 * maps[1, 0, 48:, 64:].mean()
