"""compressai_transtic.checkpoint: reading checkpoints of every layout, naming their architecture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from compressai_transtic.checkpoint import (
    ArchitectureMismatchError,
    CheckpointError,
    architecture_hints,
    check_architecture,
    checkpoint_filter_fn,
    detect_architecture,
    load_model,
    load_state_dict,
    needs_entropy_update,
)

DATA = Path(__file__).parent / "data" / "state-dict"
ENTROPY_TABLES = (
    "entropy_bottleneck._quantized_cdf",
    "entropy_bottleneck._offset",
    "entropy_bottleneck._cdf_length",
)


def reference_keys(name: str) -> Dict[str, tuple]:
    """Keys and shapes of the released checkpoints (tests/data/state-dict/<name>.tsv)."""
    shapes = {}
    for line in (DATA / f"{name}.tsv").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape, _kind = line.split("\t")
        shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


def reference_state_dict(name: str) -> Dict[str, torch.Tensor]:
    return {k: torch.zeros(shape) for k, shape in reference_keys(name).items()}


@pytest.fixture(scope="module")
def tic_state_dict() -> Dict[str, torch.Tensor]:
    from compressai_transtic.models import TIC

    torch.manual_seed(0)
    return TIC().state_dict()


#: a relative position index: derived from the window size, yet stored and read
INDEX = "g_a1.residual_group.blocks.0.attn.relative_position_index"

# Executed only if unpickling ran arbitrary code, which it must not.
SIDE_EFFECTS: List[str] = []


def _record(tag: str) -> str:
    SIDE_EFFECTS.append(tag)
    return tag


class PickledPayload:
    """An object whose unpickling calls a function: what weights_only must refuse."""

    def __reduce__(self):
        return (_record, ("unpickled",))


def test_bare_state_dict_is_read_as_is(tmp_path):
    sd = {"a.weight": torch.ones(2, 3), "b": torch.arange(4)}
    torch.save(sd, tmp_path / "bare.pth")
    loaded = load_state_dict(tmp_path / "bare.pth")
    assert set(loaded) == set(sd)
    assert torch.equal(loaded["a.weight"], sd["a.weight"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf_are_refused_naming_the_tensor(tmp_path, bad):
    sd = {"a.weight": torch.ones(2, 3), "b.bias": torch.zeros(3), "c": torch.arange(4)}
    sd["b.bias"][1] = bad
    torch.save({"state_dict": sd}, tmp_path / "damaged.pth.tar")
    with pytest.raises(CheckpointError, match=r"damaged.pth.tar: holds NaN or Inf values in \['b.bias'\]"):
        load_state_dict(tmp_path / "damaged.pth.tar")


def _expanded(shape) -> torch.Tensor:
    """A tensor of ``shape`` over one stored value, as a hostile file can declare."""
    return torch.zeros(1).expand(*shape)


def test_a_small_file_declaring_a_huge_model_is_refused_before_any_model_is_built(tmp_path, tic_state_dict):
    from compressai_transtic.models import TIC

    huge = {
        k: _expanded((4096, *v.shape[1:])) if k in ("g_a0.weight", "g_a6.weight") else v
        for k, v in tic_state_dict.items()
    }
    torch.save({"state_dict": huge}, tmp_path / "bomb.pth.tar")
    with pytest.raises(
        CheckpointError, match=r"bomb.pth.tar: tensors \['g_a0.weight', 'g_a6.weight'\] declare more values than"
    ):
        load_model(None, tmp_path / "bomb.pth.tar")
    with pytest.raises(CheckpointError, match="expanded views"):  # in memory too (CompressAI's update_model)
        TIC.from_state_dict(huge)


def test_weights_declaring_a_huge_model_are_refused_before_it_is_allocated(tmp_path, tic_state_dict):
    """A 1.2 MB ``g_a0.weight`` of 2048 channels among weights of 128 makes a TIC of
    about 8 GB; the shapes are checked on a model that allocates nothing."""
    weights = dict(tic_state_dict, **{"g_a0.weight": torch.zeros(2048, 3, 5, 5)})
    torch.save(weights, tmp_path / "declares-2048.pth")
    script = (
        "import resource, sys, torch\n"
        "from compressai_transtic.models import TIC\n"
        "from compressai_transtic.state_dicts import CheckpointError\n"
        "weights = torch.load(sys.argv[1])\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    TIC.from_state_dict(weights)\n"
        "except CheckpointError as err:\n"
        "    print('refused:', str(err)[:80])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "declares-2048.pth")],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    refused, grown_kb = result.stdout.splitlines()
    assert refused.startswith("refused: weights refused by TIC: tensors of other shapes: g_a0.bias (128,) instead of")
    assert int(grown_kb) < 300_000  # kB; building the model would take gigabytes


def test_weights_declaring_sizes_no_model_has_are_refused_naming_them(tic_state_dict):
    from compressai_transtic.models import TIC, TransTIC

    weights = dict(tic_state_dict, **{"g_a0.weight": torch.zeros(4, 3, 5, 5)})  # 4 channels, 8 heads
    for cls in (TIC, TransTIC):
        with pytest.raises(CheckpointError, match=rf"declare a {cls.__name__} that cannot be built \(N=4, M=192\)"):
            cls.from_state_dict(weights if cls is TIC else {**weights, **_prompt_keys()})


def _prompt_keys() -> Dict[str, torch.Tensor]:
    from compressai_transtic.models import TransTIC

    return {k: v for k, v in TransTIC().state_dict().items() if "prompt" in k}


def test_entropy_bottlenecks_in_compressai_1_2_names_load(tic_state_dict):
    """CompressAI 1.2 names a bottleneck's parameters ``matrices.0``, ``biases.0``,
    ``factors.0``; the released files ``_matrix0``, ``_bias0``, ``_factor0``."""
    from compressai_transtic.models import TIC

    newer = {}
    for key, value in tic_state_dict.items():
        for old, new in (("_matrix", "matrices."), ("_bias", "biases."), ("_factor", "factors.")):
            if key.startswith(f"entropy_bottleneck.{old}"):
                key = key.replace(f".{old}", f".{new}")
        newer[key] = value
    assert "entropy_bottleneck.matrices.0" in newer and "entropy_bottleneck._matrix0" not in newer
    assert set(checkpoint_filter_fn(newer)) == set(tic_state_dict)
    loaded = TIC.from_state_dict(newer).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tic_state_dict.items() if "_matrix" in k or "_factor" in k)


@pytest.mark.parametrize(
    "mangle, problem",
    [
        (lambda sd: sd.update({"g_s7.weight": torch.zeros(3, 3)}), r"other shapes: g_s7.weight \(3, 3\) instead of"),
        (lambda sd: sd.pop("g_s5.weight"), r"missing keys \['g_s5.weight'\]"),
        (lambda sd: sd.update({"bogus.weight": torch.zeros(1)}), r"unexpected keys \['bogus.weight'\]"),
        (lambda sd: sd["g_s7.weight"].view(-1)[:1].fill_(float("nan")), r"NaN or Inf values in \['g_s7.weight'\]"),
        (lambda sd: sd.update({"g_s7.bias": sd["g_s7.bias"].to_sparse()}), r"\['g_s7.bias'\] are not dense"),
        (lambda sd: sd.update({"g_s7.bias": sd["g_s7.bias"].to(torch.complex64)}), "hold complex values"),
        (lambda sd: sd.update({INDEX: sd[INDEX].flip(0)}), rf"not the ones of their window size: {INDEX} \("),
        (lambda sd: sd[INDEX].view(-1)[:1].fill_(10**6), rf"not the ones of their window size: {INDEX} \("),
    ],
    ids=["shape", "missing", "unexpected", "nan", "sparse", "complex", "permuted index", "index out of range"],
)
def test_a_refused_load_names_the_problem_and_leaves_the_model_as_it_was(tic_state_dict, mangle, problem):
    from compressai_transtic.models import TIC

    torch.manual_seed(3)
    model = TIC()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = {k: v.clone() for k, v in tic_state_dict.items()}
    mangle(weights)
    with pytest.raises(CheckpointError, match=problem):
        model.load_state_dict(weights)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    with pytest.raises(CheckpointError, match=problem):
        TIC.from_state_dict(weights)


@pytest.mark.parametrize("wrapper", ["state_dict", "network", "model_state_dict"])
def test_wrapped_state_dict_is_unwrapped(tmp_path, wrapper):
    sd = {"g_a0.weight": torch.ones(1)}
    torch.save({wrapper: sd, "epoch": 3, "loss": torch.tensor(1.5)}, tmp_path / "ckpt.pth.tar")
    assert list(load_state_dict(tmp_path / "ckpt.pth.tar")) == ["g_a0.weight"]


def test_training_checkpoint_of_compressai_script_is_unwrapped(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    torch.save(
        {"epoch": 0, "state_dict": model.state_dict(), "loss": 1.0, "optimizer": optimizer.state_dict()},
        tmp_path / "checkpoint.pth.tar",
    )
    assert set(load_state_dict(tmp_path / "checkpoint.pth.tar")) == {"weight", "bias"}


def test_dataparallel_module_prefix_is_stripped(tmp_path):
    torch.save(
        {"state_dict": {"module.g_a0.weight": torch.ones(1), "module.h_a0.bias": torch.ones(1)}}, tmp_path / "dp.pth"
    )
    assert sorted(load_state_dict(tmp_path / "dp.pth")) == ["g_a0.weight", "h_a0.bias"]


def test_arbitrary_pickled_objects_are_refused_without_running_them(tmp_path):
    path = tmp_path / "payload.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": PickledPayload()}, path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert str(path) in message
    assert "_record" in message  # names the refused global
    assert "weights_only" in message
    assert SIDE_EFFECTS == []


class SystemCall:
    """An object whose unpickling would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > side-effect",))


def test_a_pickle_that_would_run_a_command_is_refused_as_such(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": SystemCall()}, path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to load: the file calls ") and "system" in message
    assert "do not load the file" in message and "weights_only=False" not in message
    assert not (tmp_path / "side-effect").exists()


def test_truncated_checkpoint_is_reported_as_truncated(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.zeros(4096)}}, good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_state_dict(bad)
    assert str(bad) in str(info.value)


def test_text_file_is_reported_as_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is a text file\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)


def test_empty_file_is_reported_as_empty(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict(path)


def test_missing_file_raises_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_state_dict(tmp_path / "nothing.pth")


def test_dict_without_weights_is_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "note": "no weights here"}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict(tmp_path / "meta.pth")


def test_adapter_file_is_returned_whole_and_detected(tmp_path):
    adapter = {"adapter_format": 1, "task": "cls", "state_dict": {"g_a0_prompt.x": torch.ones(1)}}
    torch.save(adapter, tmp_path / "adapter.pth")
    loaded = load_state_dict(tmp_path / "adapter.pth")
    assert loaded["adapter_format"] == 1
    assert detect_architecture(loaded) == "adapter"


def test_released_base_codec_keys_are_detected_as_tic():
    assert detect_architecture(reference_keys("tic")) == "tic"


def test_released_transtic_keys_are_detected_as_transtic():
    assert detect_architecture(reference_keys("transtic")) == "transtic"


def test_detection_ignores_module_prefix():
    keys = {f"module.{k}": v for k, v in reference_keys("transtic").items()}
    assert detect_architecture(keys) == "transtic"


def test_other_compressai_models_are_unknown():
    from compressai.models import FactorizedPrior

    assert detect_architecture(FactorizedPrior(8, 8).state_dict()) == "unknown"


def test_hints_describe_the_released_transtic_variant():
    hints = architecture_hints(reference_state_dict("transtic"))
    assert hints == {
        "architecture": "transtic",
        "N": 128,
        "M": 192,
        "encoder_prompt_stages": ["g_a1", "g_a3"],
        "decoder_prompt_stages": ["g_s0", "g_s2", "g_s4", "g_s6"],
        "decoder_prompt_tokens": 16,
        "decoder_prompt_mode": "deep",
        "decoder_instance_prompts": False,
    }


def test_hints_of_base_codec_give_widths_only():
    assert architecture_hints(reference_state_dict("tic")) == {"architecture": "tic", "N": 128, "M": 192}


def test_mismatch_message_says_what_the_checkpoint_is():
    with pytest.raises(ArchitectureMismatchError, match="this checkpoint is transtic, not tic"):
        check_architecture(reference_keys("transtic"), "tic", source="cls_1.pth.tar")


def test_unknown_checkpoint_message_lists_some_keys():
    with pytest.raises(CheckpointError, match="conv1.weight"):
        check_architecture({"conv1.weight": torch.ones(1)}, "tic")


def test_missing_entropy_tables_are_filled_and_flag_an_update():
    sd = {k: v for k, v in reference_state_dict("tic").items() if k not in ENTROPY_TABLES}
    assert needs_entropy_update(sd)
    filtered = checkpoint_filter_fn(sd)
    for key in ENTROPY_TABLES:
        assert filtered[key].numel() == 0 and filtered[key].dtype == torch.int32
    assert needs_entropy_update(filtered)


def test_filled_entropy_tables_need_no_update():
    sd = reference_state_dict("tic")
    sd["entropy_bottleneck._quantized_cdf"] = torch.ones(128, 10, dtype=torch.int32)
    sd["gaussian_conditional._quantized_cdf"] = torch.ones(64, 10, dtype=torch.int32)
    assert not needs_entropy_update(checkpoint_filter_fn(sd))


def test_wrapper_prefix_is_stripped_when_the_model_is_known(tic_state_dict):
    from compressai_transtic.models import TIC

    wrapped = {f"codec.{k}": v for k, v in tic_state_dict.items()}
    assert set(checkpoint_filter_fn(wrapped, TIC())) == set(tic_state_dict)


def test_base_codec_4_layout_loads_and_gets_entropy_tables(tmp_path, tic_state_dict):
    """The released base_codec_4 lacks the bottleneck tables and carries module. prefixes."""
    sd = {f"module.{k}": v for k, v in tic_state_dict.items() if k not in ENTROPY_TABLES}
    torch.save({"epoch": 10, "state_dict": sd}, tmp_path / "base_codec_4.pth.tar")
    model = load_model(None, tmp_path / "base_codec_4.pth.tar")
    assert type(model).__name__ == "TIC"
    assert model.entropy_bottleneck._quantized_cdf.numel() > 0
    assert model.gaussian_conditional._quantized_cdf.numel() > 0
    assert torch.equal(model.state_dict()["g_a0.weight"], tic_state_dict["g_a0.weight"])
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = model.compress(x)
        assert model.decompress(out["strings"], out["shape"])["x_hat"].shape == x.shape


def test_load_model_refuses_the_wrong_architecture(tmp_path, tic_state_dict):
    torch.save({"state_dict": tic_state_dict}, tmp_path / "tic.pth.tar")
    with pytest.raises(ArchitectureMismatchError, match="this checkpoint is tic, not transtic"):
        load_model("transtic", tmp_path / "tic.pth.tar")


def test_load_model_names_the_file_of_an_unknown_checkpoint(tmp_path):
    torch.save({"conv.weight": torch.ones(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth.*conv.weight"):
        load_model(None, tmp_path / "other.pth")


@pytest.mark.parametrize("weights", [[1], {1: torch.zeros(1)}, "state_dict"], ids=["list", "number-keys", "text"])
def test_what_compressais_tools_pass_from_a_malformed_file_is_a_checkpoint_error(weights):
    from compressai_transtic.models import TIC, TransTIC

    for cls in (TIC, TransTIC):
        with pytest.raises(CheckpointError, match="not a state dict"):
            cls.from_state_dict(weights)
