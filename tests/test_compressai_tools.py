"""CompressAI 1.2.8's own, unchanged tools drive our models once the package is installed.

Each test starts a fresh interpreter, as a user would, in a temporary working
directory (from the repository root our ``examples/`` folder would shadow
CompressAI's ``examples`` package). ``PYTHONPATH`` points at this checkout so
the current sources run, while the registration itself must come from the
installed ``compressai_transtic_autoregister.pth``: these tests need the
package installed non-editable (``pip install .``; ``.ci/run`` does it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUR_NAMES = ["tic", "tic-chsel", "tic-roi", "tic-sft", "transtic", "transtic-cls", "transtic-det", "transtic-seg"]


def _installed_files() -> Optional[set]:
    try:
        files = metadata.distribution("compressai-transtic").files or []
    except metadata.PackageNotFoundError:
        return None
    return {str(f) for f in files}


INSTALLED_FILES = _installed_files()
pytestmark = pytest.mark.skipif(
    INSTALLED_FILES is None,
    reason="compressai-transtic is not installed: these tests check the installed startup hook "
    "(run `pip install .` first; .ci/run does it)",
)


@dataclass
class Workspace:
    cwd: Path
    images: Path  # one 192x256 PNG (eval_model needs a shorter side above 160 px)
    dataset: Path  # ImageFolder layout of CompressAI's training script: train/ and test/
    tic_checkpoint: Path  # {"state_dict": ...} of a randomly initialised TIC
    released_layout_checkpoint: Path  # the same weights laid out like base_codec_4.pth.tar
    transtic_checkpoint: Path


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    from compressai_transtic.models import TIC, TransTIC

    root = tmp_path_factory.mktemp("tools")
    image = _astronaut()
    (root / "images").mkdir()
    Image.fromarray(image[100:292, 100:356]).save(root / "images" / "astronaut.png")
    for split, count in (("train", 2), ("test", 1)):
        folder = root / "dataset" / split
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(image[100 * i : 100 * i + 96, 50:146]).save(folder / f"{i}.png")
    torch.manual_seed(0)
    tic_state_dict = TIC().state_dict()
    torch.save({"state_dict": tic_state_dict}, root / "tic-random.pth.tar")
    # As released: DataParallel "module." prefixes, no entropy-bottleneck tables, training extras.
    missing = {f"entropy_bottleneck.{t}" for t in ("_quantized_cdf", "_offset", "_cdf_length")}
    released = {f"module.{k}": v for k, v in tic_state_dict.items() if k not in missing}
    torch.save({"epoch": 9, "state_dict": released}, root / "base_codec_4.pth.tar")
    torch.save({"state_dict": TransTIC().state_dict()}, root / "transtic-random.pth.tar")
    (root / "work").mkdir()
    return Workspace(
        cwd=root / "work",
        images=root / "images",
        dataset=root / "dataset",
        tic_checkpoint=root / "tic-random.pth.tar",
        released_layout_checkpoint=root / "base_codec_4.pth.tar",
        transtic_checkpoint=root / "transtic-random.pth.tar",
    )


def run_python(
    args: Sequence[str],
    cwd: Path,
    torch_home: Path,
    flags: Sequence[str] = (),
    pythonpath: Sequence[Path] = (REPO,),
) -> subprocess.CompletedProcess:
    env: Dict[str, str] = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    env["TORCH_HOME"] = str(torch_home)
    result = subprocess.run(
        [sys.executable, *flags, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def eval_json(result: subprocess.CompletedProcess) -> dict:
    """eval_model's stdout must be exactly one JSON document with finite metrics."""
    output = json.loads(result.stdout)
    for key in ("psnr-rgb", "ms-ssim-rgb", "bpp"):
        (value,) = output["results"][key]
        assert math.isfinite(value), (key, value)
    assert output["results"]["bpp"][0] > 0
    return output


def test_wheel_installs_the_startup_hook_the_manifest_the_model_cards_and_the_license():
    assert "compressai_transtic_autoregister.pth" in INSTALLED_FILES
    for name in ("weights.json", "README.md", "tic.md", "transtic.md", "tic-sft.md", "tic-roi.md", "tic-chsel.md"):
        assert f"compressai_transtic/_zoo/{name}" in INSTALLED_FILES
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in INSTALLED_FILES)
    meta = metadata.metadata("compressai-transtic")
    assert meta["License-Expression"] == "Apache-2.0"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Paper"] == "https://arxiv.org/abs/2306.05085"


def test_command_line_prints_its_version(tmp_path):
    result = run_python(["-m", "compressai_transtic.cli", "--version"], tmp_path, tmp_path / "torch")
    version = metadata.version("compressai-transtic")
    assert result.stdout.startswith(f"compressai-transtic {version} (compressai {metadata.version('compressai')}")


def test_interpreter_start_imports_neither_torch_nor_compressai(tmp_path):
    result = run_python(["-X", "importtime", "-c", "pass"], tmp_path, tmp_path / "torch")
    modules = [
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "compressai_transtic._autoregister" in modules  # the .pth hook ran
    assert [m for m in modules if m.split(".")[0] in ("torch", "compressai")] == []


def test_compressai_zoo_exports_our_models_without_importing_our_package(tmp_path):
    code = """
import json, sys
from compressai.zoo import tic, transtic, transtic_cls
import compressai.registry, compressai.zoo, compressai.zoo.image as image
names = %r
print(json.dumps({
    "image_models": [n for n in names if n in compressai.zoo.image_models],
    "models": [n for n in names if n in compressai.zoo.models],
    "model_architectures": [n for n in names if n in image.model_architectures],
    "cfgs": [n for n in names if n in image.cfgs],
    "model_urls": [n for n in names if n in image.model_urls],
    "MODELS": [n for n in names if n in compressai.registry.MODELS],
    "zoo_source": tic.__module__,
    "transtic_cls_is_transtic_task": transtic_cls.__module__ == transtic.__module__,
}))
""" % (OUR_NAMES,)
    found = json.loads(run_python(["-c", code], tmp_path, tmp_path / "torch").stdout)
    for table in ("image_models", "models", "model_architectures", "cfgs", "model_urls", "MODELS"):
        assert found[table] == OUR_NAMES, table
    assert found["zoo_source"] == "compressai_transtic.zoo"
    assert found["transtic_cls_is_transtic_task"]


def test_importing_compressai_is_quiet_and_leaves_the_warning_filters_alone(tmp_path):
    code = """
import warnings
before = list(warnings.filters)
import compressai.zoo
assert list(warnings.filters) == before, "warning filters changed"
assert 'tic' in compressai.zoo.image_models
warnings.warn("`torch.jit.script` is deprecated (raised by the user)", FutureWarning)
"""
    result = run_python(["-W", "default", "-c", code], tmp_path, tmp_path / "torch")
    lines = [line for line in result.stderr.splitlines() if "Warning" in line]
    # CompressAI's import chain calls torch.jit.script; only the user's own warning is shown
    assert len(lines) == 1 and "raised by the user" in lines[0], result.stderr


def test_the_registration_diagnostic_lists_every_model(tmp_path):
    result = run_python(["-m", "compressai_transtic.registration"], tmp_path, tmp_path / "torch")
    assert result.stdout.strip() == "registered with CompressAI: " + ", ".join(OUR_NAMES)


def test_registration_waits_when_our_module_imports_compressai_first(tmp_path):
    code = "import compressai_transtic.zoo as ours, compressai.zoo as z; print(z.image_models['tic'] is ours.tic)"
    assert run_python(["-c", code], tmp_path, tmp_path / "torch").stdout.strip() == "True"


@pytest.mark.slow
def test_eval_model_checkpoint_codes_images_from_a_released_layout_file(workspace, tmp_path):
    checkpoint = workspace.released_layout_checkpoint
    result = run_python(
        ["-m", "compressai.utils.eval_model", "checkpoint", str(workspace.images), "-a", "tic", "-p", str(checkpoint)],
        workspace.cwd,
        tmp_path / "torch",
    )
    output = eval_json(result)
    assert (output["name"], output["description"]) == ("tic-mse", "Inference (ans)")
    assert "Warning" not in result.stderr, result.stderr


@pytest.mark.slow
def test_update_model_output_evaluates_without_update(workspace, tmp_path):
    run_python(
        [
            "-m",
            "compressai.utils.update_model",
            str(workspace.tic_checkpoint),
            "-a",
            "tic",
            "-n",
            "tic-updated",
            "-d",
            str(tmp_path),
        ],
        workspace.cwd,
        tmp_path / "torch",
    )
    (updated,) = tmp_path.glob("tic-updated-*.pth.tar")  # CompressAI appends a sha256 prefix
    result = run_python(
        [
            "-m",
            "compressai.utils.eval_model",
            "checkpoint",
            str(workspace.images),
            "-a",
            "tic",
            "-p",
            str(updated),
            "--no-update",
        ],
        workspace.cwd,
        tmp_path / "torch",
    )
    eval_json(result)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["tic-sft", "tic-chsel", "tic-roi"])
def test_update_model_and_eval_model_drive_the_baselines(workspace, tmp_path, arch):
    from compressai_transtic.models import ADAPTED_CODECS

    codec = ADAPTED_CODECS[arch]
    torch.manual_seed(0)
    model = codec(codec.config_class(width=8))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "model.pth.tar")
    update = ["-m", "compressai.utils.update_model", str(tmp_path / "model.pth.tar"), "-a", arch]
    run_python([*update, "-n", "updated", "-d", str(tmp_path)], workspace.cwd, tmp_path / "torch")
    (updated,) = tmp_path.glob("updated-*.pth.tar")
    evaluate = ["-m", "compressai.utils.eval_model", "checkpoint", str(workspace.images), "-a", arch]
    result = run_python([*evaluate, "-p", str(updated), "--no-update"], workspace.cwd, tmp_path / "torch")
    assert eval_json(result)["name"] == f"{arch}-mse"


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch, filename, checkpoint",
    [("tic", "base_codec_1.pth.tar", "tic_checkpoint"), ("transtic-cls", "cls_1.pth.tar", "transtic_checkpoint")],
)
def test_eval_model_pretrained_reads_the_torch_hub_cache(workspace, tmp_path, arch, filename, checkpoint):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(getattr(workspace, checkpoint), cache / filename)  # no entropy tables: built on load
    result = run_python(
        ["-m", "compressai.utils.eval_model", "pretrained", str(workspace.images), "-a", arch, "-q", "1"],
        workspace.cwd,
        tmp_path / "torch",
    )
    assert eval_json(result)["name"] == f"{arch}-mse"
    # nothing downloaded; the file's sha256 recorded on first use (trust on first use)
    assert sorted(p.name for p in cache.iterdir()) == sorted([filename, "compressai-transtic-sha256.json"])


@pytest.mark.slow
def test_compressai_training_script_trains_tic(workspace, tmp_path):
    from compressai_transtic.checkpoint import load_model

    result = run_python(
        [
            "-m",
            "examples.train",
            "-m",
            "tic",
            "-d",
            str(workspace.dataset),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--test-batch-size",
            "2",
            "--patch-size",
            "64",
            "64",
            "-n",
            "0",
            "--seed",
            "0",
        ],
        tmp_path,
        tmp_path / "torch",
    )
    assert "Test epoch 0" in result.stdout
    model = load_model(None, tmp_path / "checkpoint.pth.tar")
    assert type(model).__name__ == "TIC"


@pytest.mark.slow
def test_fallback_entry_point_registers_without_the_startup_hook(workspace, tmp_path):
    """Also covers eval_model's --entropy-estimation mode (forward() on the unpadded image)."""
    # `python -S` skips site (so .pth files); site-packages is then reached through PYTHONPATH,
    # which never processes .pth files either.
    path = (REPO, Path(sysconfig.get_paths()["purelib"]))
    probe = run_python(
        [
            "-c",
            "import sys; print([m for m in sys.modules if m.startswith('compressai_transtic')], "
            "[f for f in sys.meta_path if getattr(f, '_compressai_transtic_hook', False)])",
        ],
        tmp_path,
        tmp_path / "torch",
        flags=["-S"],
        pythonpath=path,
    )
    assert probe.stdout.strip() == "[] []"  # the startup hook did not run
    result = run_python(
        [
            "-m",
            "compressai_transtic.evaluation.eval_model",
            "checkpoint",
            str(workspace.images),
            "-a",
            "tic",
            "-p",
            str(workspace.tic_checkpoint),
            "--entropy-estimation",
        ],
        workspace.cwd,
        tmp_path / "torch",
        flags=["-S"],
        pythonpath=path,
    )
    output = eval_json(result)
    assert (output["name"], output["description"]) == ("tic-mse", "Inference (entropy estimation)")
