"""Typed settings as string enumerations: a member is its value wherever the setting is
read or written (comparisons, messages, JSON), so files written with strings keep
their meaning and the evaluation's record keys do not change."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from compressai_transtic.codec_choice import CodecChoice
from compressai_transtic.complexity import MacConvention, count_macs
from compressai_transtic.data.files import check_image
from compressai_transtic.evaluation.bd import BDAxis, BDMethod, bd_rate, overlap_share
from compressai_transtic.evaluation.codecs import CodecSpec, QualityMapSource, WeightsSource
from compressai_transtic.evaluation.curves import Curve, RateAverage
from compressai_transtic.evaluation.table import TableFormat, render
from compressai_transtic.filekinds import ImageCheck
from compressai_transtic.layers import CPU_ATTENTION_ENV, CpuAttention, cpu_attention, set_cpu_attention
from compressai_transtic.prompts import VARIANTS, EncoderMask, PromptConfig, PromptDepth
from compressai_transtic.protocol import CodingProtocol, ResizeRule, classification_protocol, detection_protocol
from compressai_transtic.strenum import StrEnum, parse_choice
from compressai_transtic.training.config import (
    ConfigError,
    CropMode,
    MixedPrecision,
    SelectBy,
    TrainConfig,
    ValidationCrop,
)
from compressai_transtic.training.data import TrainingImages, ValidationImages
from compressai_transtic.training.precision import Precision, resolve_precision


class Colour(StrEnum):
    DARK_RED = "dark-red"
    BLUE = "blue"


def test_a_member_prints_formats_compares_and_encodes_as_its_value():
    assert str(Colour.DARK_RED) == "dark-red"
    assert f"{Colour.DARK_RED}|{Colour.BLUE:>6}" == "dark-red|  blue"
    assert Colour.DARK_RED == "dark-red" and "blue" == Colour.BLUE
    assert json.dumps({"c": Colour.DARK_RED}) == '{"c": "dark-red"}'
    assert json.dumps([Colour.BLUE], indent=1) == '[\n "blue"\n]'
    assert {"blue": 1}[Colour.BLUE] == 1
    assert Colour.values() == ("dark-red", "blue")


def test_a_value_is_read_as_its_member_and_anything_else_is_refused_by_name():
    assert parse_choice(Colour, "blue", "colour") is Colour.BLUE
    assert parse_choice(Colour, Colour.BLUE, "colour") is Colour.BLUE
    for wrong in ("Blue", "BLUE", "", None, 1, ["blue"]):
        with pytest.raises(ValueError, match=r"unknown colour .*; expected one of dark-red, blue$"):
            parse_choice(Colour, wrong, "colour")


def _sha16(document: dict) -> str:  # the record key: sha256 of the sorted JSON, 16 hex digits
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def test_rate_points_hold_members_and_keep_the_record_keys_of_their_strings():
    spec = CodecSpec("mine", "tic", 2, None, "checkpoint", "m.pth", seed=3, roi_map="boxes")
    assert spec.source is WeightsSource.CHECKPOINT and spec.roi_map is QualityMapSource.BOXES
    assert spec == CodecSpec("mine", "tic", 2, None, WeightsSource.CHECKPOINT, "m.pth", seed=3, roi_map="boxes")
    plain = {
        "label": "mine",
        "architecture": "tic",
        "quality": 2,
        "task": None,
        "source": "checkpoint",
        "path": "m.pth",
        "base_path": None,
        "random_base": False,
        "seed": 3,
        "options": [],
        "roi_map": "boxes",
    }
    assert spec.key() == _sha16(plain)
    del plain["roi_map"]  # a point without quality maps is keyed without the field
    assert CodecSpec("mine", "tic", 2, None, "checkpoint", "m.pth", seed=3).key() == _sha16(plain)
    assert "quality maps from boxes" in spec.describe()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"source": "zoo"}, "unknown weights source 'zoo'; expected one of pretrained, random, checkpoint, adapter"),
        ({"roi_map": "faces"}, "unknown quality-map source 'faces'; expected one of saliency, boxes"),
        ({"source": "adapter"}, "source 'adapter' needs a path"),
    ],
)
def test_a_rate_point_with_an_unknown_source_is_refused_naming_the_choices(changes, message):
    with pytest.raises(ValueError, match=message):
        CodecSpec(**{"label": "x", "architecture": "tic", "quality": 1, **changes})


def test_a_coded_file_names_its_codec_source_by_value_and_only_a_codable_one():
    choice = CodecChoice("transtic", 1, "cls", "random", 5)
    assert choice.source is WeightsSource.RANDOM and choice.random_weights
    assert '"source": "random"' in json.dumps(choice.description())
    assert not CodecChoice("tic", 1, None, WeightsSource.PRETRAINED).random_weights
    assert CodecChoice("tic", 1, None, "adapter", adapter="a.pt", random_base=True).random_weights
    for source in ("checkpoint", "traditional"):
        with pytest.raises(
            ValueError, match=f"cannot name a {source} codec; expected one of pretrained, random, adapter"
        ):
            CodecChoice("tic", 1, None, source)


def test_protocols_hold_their_resize_rule_and_describe_it_by_value():
    assert classification_protocol().resize is ResizeRule.SHORTER_SIDE
    assert detection_protocol().resize is ResizeRule.SHORTEST_EDGE
    assert CodingProtocol().resize is ResizeRule.NONE
    assert CodingProtocol("shorter-side", short_edge=256) == CodingProtocol(ResizeRule.SHORTER_SIDE, short_edge=256)
    assert json.loads(json.dumps(detection_protocol().as_dict()))["resize"] == "shortest-edge"
    with pytest.raises(
        ValueError, match="unknown resize rule 'crop'; expected one of none, shorter-side, shortest-edge"
    ):
        CodingProtocol("crop")
    with pytest.raises(ValueError, match="resize rule 'shorter-side' needs a positive short_edge"):
        CodingProtocol(ResizeRule.SHORTER_SIDE)


def test_training_settings_hold_members_and_save_plain_strings(tmp_path):
    values = {"crop": "center", "val_crop": "full", "amp": "off", "select_by": "task_loss", "verify_images": "full"}
    cfg = TrainConfig(task="cls", dataset="images", **values)
    assert (cfg.crop, cfg.val_crop, cfg.amp, cfg.select_by, cfg.verify_images) == (
        CropMode.CENTER,
        ValidationCrop.FULL,
        MixedPrecision.OFF,
        SelectBy.TASK_LOSS,
        ImageCheck.FULL,
    )
    saved = cfg.to_dict()
    assert {k: (type(saved[k]), saved[k]) for k in values} == {k: (str, v) for k, v in values.items()}
    # checkpoints carry the settings and are read back with weights_only=True
    torch.save({"config": saved}, tmp_path / "run.pt")
    assert torch.load(tmp_path / "run.pt", weights_only=True)["config"] == saved
    assert TrainConfig.from_dict(saved) == cfg
    assert TrainConfig(task="cls", dataset="images").crop is None  # the task's default fills it


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("amp", "fast", "amp must be one of auto, off, bf16, fp16 (got 'fast')"),
        ("crop", 3, "crop must be one of center, random (got 3)"),
        ("select_by", "Loss", "select_by must be one of loss, task_loss (got 'Loss')"),
        ("verify_images", None, "verify_images must be one of header, full, off (got None)"),
    ],
)
def test_a_training_setting_outside_its_choices_is_refused_naming_them(option, value, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"task": "cls", "dataset": "images", option: value})
    assert str(err.value).endswith(message)


def test_image_checks_and_crops_take_members_or_values_and_refuse_others(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert check_image(empty, "header") == check_image(empty, ImageCheck.HEADER) == "the file is empty (0 bytes)"
    assert check_image(empty, "off") is None
    with pytest.raises(ValueError, match="unknown image check 'deep'; expected one of header, full, off"):
        check_image(empty, "deep")
    assert TrainingImages([], 64, "random", 0).crop is CropMode.RANDOM
    assert ValidationImages([], 64, "full").crop is ValidationCrop.FULL
    with pytest.raises(ValueError, match="unknown crop mode 'full'; expected one of center, random"):
        TrainingImages([], 64, "full", 0)


def test_prompt_settings_hold_members_and_adapter_files_keep_their_strings(tmp_path):
    cfg = PromptConfig(depth="shallow", encoder_mask="aligned")
    assert cfg.depth is PromptDepth.SHALLOW and cfg.encoder_mask is EncoderMask.ALIGNED
    assert cfg == PromptConfig(depth=PromptDepth.SHALLOW, encoder_mask=EncoderMask.ALIGNED)
    assert VARIANTS["shallow"].depth is PromptDepth.SHALLOW and VARIANTS["prompts-64"].encoder_mask == "aligned"
    saved = cfg.to_dict()  # adapter files and .ttic headers carry it
    assert (type(saved["depth"]), type(saved["encoder_mask"])) == (str, str)
    torch.save({"config": saved}, tmp_path / "adapter.pt")
    assert PromptConfig.from_dict(torch.load(tmp_path / "adapter.pt", weights_only=True)["config"]) == cfg
    with pytest.raises(ValueError, match=r"depth must be 'deep' or 'shallow' \(got 'Deep'\)"):
        PromptConfig(depth="Deep")
    with pytest.raises(
        ValueError, match=r"PromptConfig.encoder_mask must be of type str, 'legacy' or 'aligned', got 1"
    ):
        PromptConfig(encoder_mask=1)


def test_the_cpu_attention_choice_is_a_member_whether_code_or_the_environment_makes_it(monkeypatch):
    monkeypatch.setenv(CPU_ATTENTION_ENV, "sdpa")
    try:
        set_cpu_attention(None)
        assert cpu_attention() is CpuAttention.SDPA
        set_cpu_attention("packed")
        assert cpu_attention() is CpuAttention.PACKED
        set_cpu_attention(CpuAttention.AUTO)
        assert cpu_attention() is CpuAttention.AUTO and f"{cpu_attention()}" == "auto"
        with pytest.raises(ValueError, match="cpu attention must be one of"):
            set_cpu_attention("fused")
        assert cpu_attention() is CpuAttention.AUTO  # a refused choice changes nothing
    finally:
        set_cpu_attention(None)


def test_mac_conventions_are_taken_as_members_or_values():
    layer = torch.nn.Linear(8, 4)
    x = torch.zeros(10, 8)
    assert count_macs(lambda: layer(x), MacConvention.TRUE) == count_macs(lambda: layer(x), "true") == 10 * 8 * 4 + 40
    assert count_macs(lambda: layer(x), MacConvention.PAPER) == 10 * 8 * 4
    with pytest.raises(ValueError, match="convention must be one of"):
        count_macs(lambda: layer(x), "exact")


def test_a_precision_takes_a_resolved_mode_as_member_or_value():
    assert Precision("off", "cpu").mode is MixedPrecision.OFF
    assert Precision("bf16", "cuda").dtype is torch.bfloat16
    assert resolve_precision(MixedPrecision.AUTO, torch.device("cpu")).mode is MixedPrecision.OFF
    with pytest.raises(ValueError, match="resolve_precision"):
        Precision(MixedPrecision.AUTO, "cuda")
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        Precision("half", "cuda")


def test_settings_dataclasses_show_their_members_as_strings_in_messages():
    assert repr(PromptDepth.DEEP) == "'deep'"
    assert "depth='shallow', encoder_mask='legacy'" in repr(PromptConfig(depth="shallow"))
    assert "source='random'" in repr(CodecSpec("x", "tic", 1, None, "random"))


def test_table_formats_and_rate_averages_are_taken_as_members_or_values():
    rows = [["model", "bpp"], ["tic", "0.5"]]
    assert render(rows, "markdown") == render(rows, TableFormat.MARKDOWN) != render(rows, "latex")
    with pytest.raises(ValueError, match="unknown table format 'html'; expected one of markdown, latex"):
        render(rows, "html")
    with pytest.raises(ValueError, match="unknown rate average 'mean'; expected one of image, total"):
        Curve("c", object(), [], rate_average="mean")
    assert Curve("c", object(), [], rate_average="total").rate_average is RateAverage.TOTAL


def test_bd_methods_and_axes_are_taken_as_members_or_values_and_others_are_refused():
    anchor, test = ([0.1, 0.2, 0.4, 0.8], [30.0, 32.0, 34.0, 36.0]), ([0.1, 0.2, 0.4, 0.8], [31.0, 33.0, 35.0, 37.0])
    assert bd_rate(*anchor, *test, method="cubic") == bd_rate(*anchor, *test, method=BDMethod.CUBIC)
    assert overlap_share(*anchor, *test, axis="rate") == overlap_share(*anchor, *test, axis=BDAxis.RATE) == 1.0
    with pytest.raises(ValueError, match=r"unknown BD method 'akima'"):
        bd_rate(*anchor, *test, method="akima")
    with pytest.raises(ValueError, match="unknown BD axis 'log-rate'; expected one of metric, rate"):
        overlap_share(*anchor, *test, axis="log-rate")


def test_a_task_default_that_leaves_a_choice_unset_is_refused_when_the_settings_are_resolved():
    cfg = TrainConfig(task="cls", dataset="images")
    with pytest.raises(ConfigError, match=r"crop must be one of center, random \(got None\)"):
        cfg.resolve({"crop": None}, lambda q: 0.01)
    assert cfg.resolve({"crop": "center"}, lambda q: 0.01).crop is CropMode.CENTER
