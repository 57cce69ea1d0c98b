"""What the models' Python API refuses, and that a refusal changes nothing.

CompressAI users call ``compress``, ``decompress``, ``update`` and ``load_state_dict``
directly. Each of them either does its job or raises a clear error before it changes
the model: no deep torch traceback, no half-loaded weights, no table of gigabytes.
The oracles are the model's own state before the call (compared tensor by tensor)
and sizes worked out by hand.
"""

from __future__ import annotations

import threading
from typing import Dict

import pytest
import torch
from codec_models import randomize_adapter, sample_image, tiny_tic

from compressai_transtic import zoo
from compressai_transtic.bitstream import BitstreamError
from compressai_transtic.models import ADAPTED_CODECS, TIC
from compressai_transtic.state_dicts import CheckpointError


def _snapshot(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: torch.nn.Module, before: Dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if after[k].shape != before[k].shape or not torch.equal(after[k], before[k])]
    assert not changed, f"changed by a refused call: {changed[:5]}"


@pytest.fixture(scope="module")
def model() -> TIC:
    return tiny_tic()


# ---------------------------------------------------------------------------- images
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.float16, torch.float64, torch.bool])
def test_images_of_another_dtype_than_the_weights_are_refused_by_name(model, dtype):
    x = (sample_image(32, 32) * 255).to(dtype)
    with pytest.raises(TypeError, match=f"images of dtype {dtype} for a model of dtype torch.float32"):
        model.compress(x)
    with pytest.raises(TypeError, match="images of dtype"):
        model(x)


def test_integer_images_are_told_to_be_divided_by_255(model):
    with pytest.raises(TypeError, match="divide 8-bit images by 255"):
        model.compress((sample_image(32, 32) * 255).to(torch.uint8))


def test_images_on_another_device_are_refused_by_name(model):
    with pytest.raises(ValueError, match="images on meta for a model on cpu"):
        model.compress(torch.empty(1, 3, 32, 32, device="meta"))


def test_pixels_outside_0_1_are_not_coded(model):
    x = sample_image(32, 32)
    with pytest.raises(ValueError, match=r"pixel values must lie in \[0, 1\], got 0..255"):
        model.compress(torch.cat([x[:, :, :1] * 0, x[:, :, 1:] * 0 + 255], dim=2))
    with pytest.raises(ValueError, match="got -0.5"):
        model.compress(x - 0.5)
    for bad in (float("nan"), float("inf")):
        y = x.clone()
        y[0, 1, 3, 4] = bad
        with pytest.raises(ValueError, match="non-finite pixel values"):
            model.compress(y)


def test_coding_runs_in_eval_mode_and_gives_back_the_modes_it_found():
    model = tiny_tic()
    x = sample_image(64, 64)
    with torch.no_grad():
        expected = model.compress(x)["strings"]
        model.train()
        model.g_a1.eval()  # a mixed state, as a user may leave it
        modes = {name: m.training for name, m in model.named_modules()}
        for _ in range(3):  # stochastic depth would make these differ from run to run
            enc = model.compress(x)
            assert enc["strings"] == expected
        decoded = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert {name: m.training for name, m in model.named_modules()} == modes
    with torch.no_grad():
        model.eval()
        assert torch.equal(decoded, model.decompress(enc["strings"], enc["shape"])["x_hat"])


@pytest.mark.parametrize("arch", sorted(ADAPTED_CODECS))
def test_every_adapted_codec_codes_in_eval_mode_from_training_mode(arch):
    model = randomize_adapter(ADAPTED_CODECS[arch].from_base(tiny_tic())).eval()
    model.update(force=True)
    x = sample_image(64, 64)
    with torch.no_grad():
        expected = model.compress(x)
        image = model.decompress(expected["strings"], expected["shape"])["x_hat"]
        model.train()
        enc = model.compress(x)
        assert enc["strings"] == expected["strings"]
        assert torch.equal(model.decompress(enc["strings"], enc["shape"])["x_hat"], image)
    assert all(m.training for m in model.modules())


def test_a_call_ending_while_another_thread_codes_leaves_that_one_in_eval_mode():
    model = tiny_tic()
    x = sample_image(64, 64)
    with torch.no_grad():
        expected = model.compress(x)["strings"]
    model.train()
    second_inside, first_done = threading.Event(), threading.Event()

    def meet(module, args):  # the first call ends while the second is inside the encoder
        if threading.current_thread().name == "second":
            second_inside.set()
            assert first_done.wait(60)
        else:
            assert second_inside.wait(60)

    hook = model.g_a0.register_forward_pre_hook(meet)
    results = {}

    def code() -> None:
        with torch.no_grad():
            results[threading.current_thread().name] = model.compress(x)["strings"]
        if threading.current_thread().name == "first":
            first_done.set()

    threads = [threading.Thread(target=code, name=name) for name in ("first", "second")]
    threads[0].start()
    threads[1].start()
    for t in threads:
        t.join(120)
    hook.remove()
    assert results == {"first": expected, "second": expected}
    assert all(m.training for m in model.modules())  # given back once the last call ended


# ---------------------------------------------------------------------------- decoding
def test_decompress_before_update_asks_for_update():
    fresh = TIC(N=16, M=16).eval()
    enc = tiny_tic().compress(sample_image(64, 64))
    with pytest.raises(ValueError, match=r"call update\(\)"):
        fresh.decompress(enc["strings"], enc["shape"])


@pytest.mark.parametrize("shape", [(1.5, 1.0), "11", (1, True), (1,), None, (1, 1, 1), torch.tensor([1.0, 1.0])])
def test_a_latent_shape_must_be_two_positive_integers(model, shape):
    enc = model.compress(sample_image(64, 64))
    with pytest.raises(BitstreamError, match="invalid latent shape"):
        model.decompress(enc["strings"], shape)


def test_integers_of_any_library_are_latent_shapes(model):
    np = pytest.importorskip("numpy")
    enc = model.compress(sample_image(64, 64))
    for shape in (enc["shape"], (np.int64(1), np.int32(1)), [1, 1], np.array([1, 1]), torch.tensor([1, 1])):
        assert model.decompress(enc["strings"], shape)["x_hat"].shape == (1, 3, 64, 64)


# ---------------------------------------------------------------------------- update()
@pytest.mark.parametrize(
    "table, problem",
    [
        ([0.11, float("nan"), 1.0], "finite and positive"),
        ([-1.0, 0.5, 2.0], "finite and positive"),
        ([0.5, 0.2, 1.0], "rise strictly"),
        ([0.11, 1e6], "needs .* symbols, more than a CDF holds"),
        ([], "1 to 1024 entries"),
        (list(range(1, 2000)), "2000 entries|1999 entries"),
        (["a", "b"], "sequence of at most 1024 numbers"),
    ],
)
def test_update_refuses_a_bad_scale_table_and_keeps_the_old_one(table, problem):
    model = tiny_tic()
    before = _snapshot(model)
    with pytest.raises(ValueError, match=problem):
        model.update(scale_table=table, force=True)
    _assert_unchanged(model, before)
    model.compress(sample_image(32, 32))


def test_a_refused_scale_table_changes_no_entropy_model_even_when_quantiles_would_update():
    model = tiny_tic()
    before = _snapshot(model)
    with pytest.raises(ValueError, match="rise strictly"):
        model.update(scale_table=[0.5, 0.2], force=True, update_quantiles=True)
    _assert_unchanged(model, before)
    for table in ((s for s in [0.2, 0.5]), torch.tensor(3.0)):  # no length: refused by name, not a TypeError
        with pytest.raises(ValueError, match="scale table refused"):
            model.update(scale_table=table, force=True)


def test_quantiles_too_far_apart_for_a_cdf_are_refused_before_any_table_is_built():
    model = tiny_tic()
    with torch.no_grad():
        model.entropy_bottleneck.quantiles[3, 0, 0] = -2e5  # 400001 symbols: no 16-bit CDF holds them
        model.entropy_bottleneck.quantiles[3, 0, 2] = 2e5
    before = _snapshot(model)
    with pytest.raises(ValueError, match="quantiles of channel 3 span 400001 symbols"):
        model.update(force=True)
    _assert_unchanged(model, before)
    with torch.no_grad():
        model.entropy_bottleneck.quantiles[3, 0, 0] = -1e12  # beyond int32 on the way
    with pytest.raises(ValueError, match="quantiles of channel 3 span"):
        model.update(force=True)


def test_from_state_dict_refuses_weights_whose_tables_cannot_be_rebuilt():
    tables = ("_quantized_cdf", "_offset", "_cdf_length")  # absent, as in the released base_codec_4
    state = {k: v for k, v in tiny_tic().state_dict().items() if not k.endswith(tables)}
    state["entropy_bottleneck.quantiles"] = state["entropy_bottleneck.quantiles"].clone()
    state["entropy_bottleneck.quantiles"][0, 0, 0] = -1e9
    with pytest.raises(ValueError, match="quantiles of channel 0 span"):
        TIC.from_state_dict(state)


# ---------------------------------------------------------------------------- load_state_dict
@pytest.mark.parametrize("value", [3.0, None, [1, 2], "weights"])
def test_a_value_that_is_not_a_tensor_is_refused_before_anything_changes(value):
    model, source = tiny_tic(0), tiny_tic(1)
    state = dict(source.state_dict())
    state["g_s7.weight"] = value  # the last of the transforms' keys
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match="values that are not tensors: g_s7.weight"):
        model.load_state_dict(state)
    _assert_unchanged(model, before)


def test_a_tensor_on_the_meta_device_is_refused_before_anything_changes():
    model, source = tiny_tic(0), tiny_tic(1)
    state = dict(source.state_dict())
    state["g_s7.weight"] = torch.empty_like(state["g_s7.weight"], device="meta")
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match="meta device"):
        model.load_state_dict(state)
    _assert_unchanged(model, before)


def test_weights_with_larger_coding_tables_load_into_a_model_that_has_tables():
    source = tiny_tic(1)
    with torch.no_grad():
        source.entropy_bottleneck.quantiles[:, 0, 0] -= 20  # wider tables than the target's
        source.entropy_bottleneck.quantiles[:, 0, 2] += 20
    source.update(force=True)
    target = tiny_tic(0)
    assert target.entropy_bottleneck._quantized_cdf.shape != source.entropy_bottleneck._quantized_cdf.shape
    target.load_state_dict(source.state_dict())
    _assert_unchanged(target, _snapshot(source))
    x = sample_image(64, 64)
    with torch.no_grad():
        assert target.compress(x)["strings"] == source.compress(x)["strings"]


def test_a_scale_table_that_cannot_index_scales_is_refused_by_load_state_dict():
    model, source = tiny_tic(0), tiny_tic(1)
    state = dict(source.state_dict())
    state["gaussian_conditional.scale_table"] = state["gaussian_conditional.scale_table"].flip(0)
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match="gaussian_conditional.scale_table: its entries must rise strictly"):
        model.load_state_dict(state)
    _assert_unchanged(model, before)


# ---------------------------------------------------------------------------- zoo
@pytest.mark.parametrize("quality", [True, 2.0, "2", None])
def test_a_zoo_quality_must_be_one_of_the_integers(quality):
    with pytest.raises(ValueError, match="choose one of the integers"):
        zoo.tic(quality=quality)
