"""compressai_transtic.zoo: tables, manifest, and the cached / offline / verified loading of weights."""

from __future__ import annotations

import hashlib
import json
import urllib.error
from pathlib import Path

import pytest
import torch
from codec_models import describe, read_tsv

from compressai_transtic import zoo
from compressai_transtic.checkpoint import ArchitectureMismatchError, CheckpointError
from compressai_transtic.download import FileToFetch, WeightsToFetchError

RELEASE = "https://github.com/NYCU-MAPL/TransTIC/releases/download/v1.0/"


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache: TORCH_HOME points to a temporary folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch" / "hub"


@pytest.fixture
def offline(monkeypatch):
    """Any download attempt fails as it does without network."""
    calls = []

    def no_network(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return calls


@pytest.fixture(scope="module")
def tic_state_dict():
    from compressai_transtic.models import TIC

    torch.manual_seed(0)
    return TIC().state_dict()


def fake_downloader(monkeypatch, payload: bytes):
    """Serve ``payload`` for every URL, writing it where torch.hub would."""
    targets = []

    def download(url, dst, hash_prefix=None, progress=True):
        targets.append(Path(dst))
        Path(dst).write_bytes(payload)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return targets


def test_every_architecture_and_quality_uses_n128_m192():
    assert set(zoo.cfgs) == {
        "tic",
        "transtic",
        "transtic-cls",
        "transtic-det",
        "transtic-seg",
        "tic-sft",
        "tic-chsel",
        "tic-roi",
    }
    for arch in zoo.cfgs:
        assert [zoo.channels(arch, q) for q in (1, 2, 3, 4)] == [(128, 192)] * 4, arch


@pytest.mark.parametrize("arch", ["tic", "transtic", "transtic-det", "tic-sft", "tic-chsel", "tic-roi"])
def test_cfgs_are_positional_constructor_arguments_as_compressai_reads_them(arch):
    """``model_architectures[arch](*cfgs[arch][quality])``, as CompressAI's own
    ``compressai.zoo.image._load_model`` builds a model, gives the zoo function's model."""
    from compressai.zoo.image import cfgs, model_architectures

    built = model_architectures[arch](*cfgs[arch][2])
    from_zoo = getattr(zoo, arch.replace("-", "_"))(2)
    assert type(built) is type(from_zoo)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in from_zoo.state_dict().items()}


def test_transtic_takes_compressai_positional_arguments_and_the_task_by_keyword():
    """CompressAI's zoo signature is ``(quality, metric, pretrained, progress)``."""
    with pytest.raises(ValueError, match="invalid metric 'ms-ssim'"):
        zoo.transtic(1, "ms-ssim")
    with pytest.raises(TypeError):
        zoo.transtic(1, "mse", False, True, "det")  # the task is keyword-only
    assert type(zoo.transtic(1, "mse", False, True, task="det")).__name__ == "TransTIC"


def test_model_urls_point_at_the_release_assets():
    for q in (1, 2, 3, 4):
        assert zoo.model_urls["tic"]["mse"][q] == f"{RELEASE}base_codec_{q}.pth.tar"
        for task in ("cls", "det", "seg"):
            assert zoo.model_urls[f"transtic-{task}"]["mse"][q] == f"{RELEASE}{task}_{q}.pth.tar"
    assert zoo.model_urls["transtic"] == zoo.model_urls["transtic-cls"]


def test_manifest_records_the_training_lambdas():
    lambdas = {(w.task, w.quality): w.lmbda for w in zoo.weights}
    assert [lambdas[(None, q)] for q in (1, 2, 3, 4)] == [0.0018, 0.0035, 0.0067, 0.013]
    for task in ("det", "seg"):
        assert [lambdas[(task, q)] for q in (1, 2, 3, 4)] == [2, 1, 0.5, 0.2]
    assert len(zoo.weights) == 16


def test_manifest_rows_are_complete_weights_records():
    for w in zoo.weights:
        assert w.url == RELEASE + w.filename
        assert w.arch in ("tic", "transtic") and w.metric == "mse"
        assert (w.task is None) == (w.arch == "tic")
        assert w.sha256 == "" or len(w.sha256) == 64


def test_unknown_weights_error_lists_what_exists():
    with pytest.raises(ValueError, match="available: .*transtic/seg/mse/q4"):
        zoo.get_weights("transtic", 5, "seg")


def test_cache_path_follows_torch_home(hub_dir):
    w = zoo.get_weights("tic", 2)
    assert w.cache_path == hub_dir / "checkpoints" / "base_codec_2.pth.tar"


@pytest.mark.parametrize("quality", [1, 2, 3, 4])
def test_untrained_tic_has_the_released_checkpoints_layout(quality):
    assert describe(zoo.tic(quality)) == read_tsv("tic.tsv")  # keys, shapes, parameters vs buffers


@pytest.mark.parametrize(
    "kwargs, error",
    [({"quality": 5}, "quality"), ({"quality": 0}, "quality"), ({"quality": 1, "metric": "ms-ssim"}, "metric")],
)
def test_tic_rejects_invalid_quality_and_metric(kwargs, error):
    with pytest.raises(ValueError, match=error):
        zoo.tic(**kwargs)


def test_transtic_rejects_unknown_task():
    with pytest.raises(ValueError, match="task"):
        zoo.transtic(1, task="depth")


def test_constructor_arguments_cannot_change_pretrained_models():
    with pytest.raises(TypeError, match="pretrained=True"):
        zoo.tic(1, pretrained=True, N=64)


def test_offline_without_cache_names_url_and_cache_path(hub_dir, offline, capsys):
    with pytest.raises(zoo.WeightsUnavailableError) as info:
        zoo.tic(1, pretrained=True)
    error = info.value
    expected_path = hub_dir / "checkpoints" / "base_codec_1.pth.tar"
    assert error.url == RELEASE + "base_codec_1.pth.tar"
    assert error.path == expected_path
    assert error.url in str(error) and str(expected_path) in str(error)
    assert offline == [error.url]
    assert list((hub_dir / "checkpoints").iterdir()) == []  # nothing partial left behind
    assert capsys.readouterr().out == ""


class _TaskWithMissingNetwork:
    """What fetch_all asks of a task, whose network's file is missing."""

    def __init__(self, cache: Path) -> None:
        self.file = FileToFetch("ResNet50", "https://example.org/resnet50.pth", cache / "resnet50.pth", "offline")

    def prepare_network(self):
        return [self.file]


def test_fetch_all_names_every_missing_file_once_in_one_error(hub_dir, offline):
    rows = [zoo.get_weights("tic", 1), zoo.get_weights("transtic", 1, "cls"), zoo.get_weights("tic", 1)]
    cache = hub_dir / "checkpoints"
    tasks = [_TaskWithMissingNetwork(cache), _TaskWithMissingNetwork(cache)]  # two tasks, one network file
    with pytest.raises(WeightsToFetchError) as info:
        zoo.fetch_all(rows, tasks, progress=False)
    files = info.value.files
    assert [(f.what, f.path) for f in files] == [
        ("tic q1", cache / "base_codec_1.pth.tar"),
        ("transtic-cls q1", cache / "cls_1.pth.tar"),
        ("ResNet50", cache / "resnet50.pth"),
    ]
    assert offline == [RELEASE + "base_codec_1.pth.tar", RELEASE + "cls_1.pth.tar"]  # each looked for once
    message = str(info.value)
    assert message.startswith("3 weights file(s) are neither cached nor downloadable")
    assert f"tic q1: {RELEASE}base_codec_1.pth.tar -> {cache / 'base_codec_1.pth.tar'}" in message
    assert "Temporary failure in name resolution" in message and "offline" in message


def test_fetch_all_refuses_a_damaged_cached_file_instead_of_listing_it(hub_dir, offline):
    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "base_codec_1.pth.tar").write_bytes(b"\x80\x02not a checkpoint" * 10)
    rows = [zoo.get_weights("tic", 1), zoo.get_weights("transtic", 1, "cls")]
    with pytest.raises((CheckpointError, zoo.ChecksumMismatchError)) as info:
        zoo.fetch_all(rows, progress=False)
    assert "base_codec_1.pth.tar" in str(info.value)


def test_cached_weights_load_without_network_and_can_code(hub_dir, offline, tic_state_dict, capsys):
    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"state_dict": tic_state_dict}, cache / "base_codec_3.pth.tar")
    model = zoo.tic(3, pretrained=True)
    assert offline == []
    assert torch.equal(model.state_dict()["g_s7.weight"], tic_state_dict["g_s7.weight"])
    # The file had no entropy tables (never updated): they were built on loading.
    assert model.entropy_bottleneck._quantized_cdf.numel() > 0
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = model.compress(x)
        assert model.decompress(out["strings"], out["shape"])["x_hat"].shape == x.shape
    assert capsys.readouterr().out == ""


def test_download_is_renamed_into_the_cache_only_when_complete(hub_dir, monkeypatch):
    targets = fake_downloader(monkeypatch, b"weights")
    path = zoo.fetch_url(RELEASE + "det_2.pth.tar", progress=False)
    assert path == hub_dir / "checkpoints" / "det_2.pth.tar"
    assert path.read_bytes() == b"weights"
    assert targets[0].parent == path.parent and targets[0] != path
    assert sorted(p.name for p in path.parent.iterdir()) == ["compressai-transtic-sha256.json", "det_2.pth.tar"]


def test_real_download_reports_progress_on_stderr_only(hub_dir, tmp_path, capsys):
    source = tmp_path / "served" / "base_codec_9.pth.tar"
    source.parent.mkdir()
    source.write_bytes(b"x" * 50_000)
    path = zoo.fetch_url(source.as_uri(), sha256=hashlib.sha256(source.read_bytes()).hexdigest(), progress=True)
    assert path.read_bytes() == source.read_bytes()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err != ""  # torch.hub's progress bar


def test_download_with_wrong_sha256_is_discarded(hub_dir, monkeypatch):
    fake_downloader(monkeypatch, b"tampered")
    w = zoo.Weights(
        url=RELEASE + "seg_1.pth.tar",
        filename="seg_1.pth.tar",
        sha256=hashlib.sha256(b"released").hexdigest(),
        task="seg",
        quality=1,
        lmbda=2.0,
        arch="transtic",
    )
    with pytest.raises(zoo.ChecksumMismatchError) as info:
        zoo.fetch_weights(w, progress=False)
    assert info.value.actual == hashlib.sha256(b"tampered").hexdigest()
    assert list((hub_dir / "checkpoints").iterdir()) == []


def test_cached_file_with_wrong_sha256_is_refused(hub_dir, offline):
    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "cls_1.pth.tar").write_bytes(b"corrupted")
    w = zoo.Weights(
        RELEASE + "cls_1.pth.tar", "cls_1.pth.tar", hashlib.sha256(b"ok").hexdigest(), "cls", 1, None, "transtic"
    )
    with pytest.raises(zoo.ChecksumMismatchError, match="cls_1.pth.tar"):
        zoo.fetch_weights(w)


def test_cached_file_with_matching_sha256_is_used(hub_dir, offline):
    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "cls_1.pth.tar").write_bytes(b"ok")
    w = zoo.Weights(
        RELEASE + "cls_1.pth.tar", "cls_1.pth.tar", hashlib.sha256(b"ok").hexdigest(), "cls", 1, None, "transtic"
    )
    assert zoo.fetch_weights(w) == cache / "cls_1.pth.tar"


def test_pretrained_transtic_refuses_a_base_codec_file(hub_dir, offline, tic_state_dict):
    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"state_dict": tic_state_dict}, cache / "det_1.pth.tar")
    with pytest.raises(ArchitectureMismatchError, match="this checkpoint is tic, not transtic"):
        zoo.transtic(1, task="det", pretrained=True)


def test_untrained_transtic_is_the_released_variant():
    from compressai_transtic.checkpoint import architecture_hints

    model = zoo.transtic(2, task="det")
    assert type(model).__name__ == "TransTIC"
    hints = architecture_hints(model.state_dict())
    assert (hints["N"], hints["M"], hints["decoder_prompt_tokens"]) == (128, 192, 16)
    assert hints["encoder_prompt_stages"] == ["g_a1", "g_a3"]


@pytest.mark.parametrize("function, task", [(zoo.transtic_cls, "cls"), (zoo.transtic_seg, "seg")])
def test_per_task_functions_load_that_tasks_weights(hub_dir, offline, function, task):
    source = zoo.transtic(2)
    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"state_dict": source.state_dict()}, cache / f"{task}_2.pth.tar")
    model = function(2, pretrained=True)
    key = "g_s0.residual_group.prompt_embeddings"
    assert torch.equal(model.state_dict()[key], source.state_dict()[key])
    assert model.gaussian_conditional._quantized_cdf.numel() > 0
    assert offline == []


@pytest.mark.parametrize("name", zoo.ARCHITECTURES)
def test_every_zoo_name_has_a_model_card(name):
    card = zoo.model_card(name)
    assert card.startswith("# Model card") and f"`{name}`" in card


def test_unknown_model_card_names_the_known_ones():
    with pytest.raises(ValueError, match="zoo names"):
        zoo.model_card("tic-hyper")


def test_models_command_lists_every_released_file_as_present_or_missing(hub_dir, capsys):
    from compressai_transtic.cli import main

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "det_3.pth.tar").write_bytes(b"placeholder")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"released weights (1 of 16 in {cache})" in out
    lines = {line.split()[0] + line.split()[1]: line for line in out.splitlines() if line.startswith("  transtic-")}
    assert "present  first use will record its sha256" in lines["transtic-det3"]
    assert "missing  first use will record its sha256" in lines["transtic-seg3"]
    assert "jpeg      available (Pillow" in out

    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert len(listing["weights"]) == 16 and listing["cache"] == str(cache)
    assert [w["file"] for w in listing["weights"] if w["present"]] == ["det_3.pth.tar"]
    assert {c["name"] for c in listing["codecs"]} == {"jpeg", "webp", "avif", "jpeg2000", "bpg", "hm", "vtm"}


# ------------------------------------------------------------------ trust on first use
def test_a_released_file_that_changes_after_first_use_is_refused_until_forgotten(
    hub_dir, offline, tic_state_dict, capsys
):
    from compressai_transtic.cli import main
    from compressai_transtic.models import TIC

    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    path = cache / "base_codec_3.pth.tar"
    torch.save({"state_dict": tic_state_dict}, path)
    zoo.tic(3, pretrained=True)  # first use: its sha256 is recorded
    first = hashlib.sha256(path.read_bytes()).hexdigest()
    store = json.loads((cache / "compressai-transtic-sha256.json").read_text())
    assert store["files"]["base_codec_3.pth.tar"]["sha256"] == first

    torch.manual_seed(1)
    torch.save({"state_dict": TIC().state_dict()}, path)  # another, perfectly loadable, file
    with pytest.raises(zoo.ChecksumMismatchError, match="models --forget base_codec_3.pth.tar") as info:
        zoo.tic(3, pretrained=True)
    assert info.value.expected == first and "when first used" in str(info.value)

    assert main(["models", "--forget", "base_codec_3.pth.tar"]) == 0
    assert "forgot the sha256 of base_codec_3.pth.tar" in capsys.readouterr().out
    zoo.tic(3, pretrained=True)  # recorded afresh
    assert zoo.TrustStore(cache).get("base_codec_3.pth.tar").sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["truncated", "wrong-shape"])
def test_a_file_that_cannot_be_loaded_at_first_use_is_not_trusted(
    hub_dir, monkeypatch, tic_state_dict, tmp_path, damage
):
    good = tmp_path / "good.pth.tar"
    torch.save({"state_dict": tic_state_dict}, good)
    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    path = cache / "base_codec_2.pth.tar"
    if damage == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    else:
        torch.save({"state_dict": {**tic_state_dict, "g_s7.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(ValueError, match="base_codec_2.pth.tar"):
        zoo.tic(2, pretrained=True)
    assert zoo.TrustStore(cache).get("base_codec_2.pth.tar") is None

    path.unlink()  # as the message says; a good copy is then downloaded and trusted
    fake_downloader(monkeypatch, good.read_bytes())
    zoo.tic(2, pretrained=True)
    assert zoo.TrustStore(cache).get("base_codec_2.pth.tar").sha256 == hashlib.sha256(good.read_bytes()).hexdigest()


def test_a_download_that_cannot_be_loaded_is_neither_kept_nor_trusted(hub_dir, monkeypatch):
    targets = fake_downloader(monkeypatch, b"<html>rate limited</html>")
    with pytest.raises(
        zoo.WeightsUnavailableError, match="the downloaded file is not usable: .*not a PyTorch checkpoint"
    ) as info:
        zoo.tic(3, pretrained=True)
    cache = hub_dir / "checkpoints"
    assert targets and sorted(p.name for p in cache.iterdir()) == []
    assert ".download" not in str(info.value) and f"{cache / 'base_codec_3.pth.tar'}: not a" in str(info.value)


@pytest.mark.parametrize("url", ["notaurl/x.pth", "ftp://host/x.pth", "http://[::1/x.pth", "https:///x.pth"])
def test_a_url_that_cannot_be_fetched_is_named_and_nothing_is_left_in_the_cache(hub_dir, url):
    with pytest.raises(zoo.WeightsUnavailableError, match="not an http\\(s\\) or file: URL") as info:
        zoo.fetch_url(url)
    assert url in str(info.value) and str(hub_dir / "checkpoints" / "x.pth") in str(info.value)
    assert not (hub_dir / "checkpoints").exists() or list((hub_dir / "checkpoints").iterdir()) == []


def test_a_download_refused_by_urllib_leaves_no_partial_file(hub_dir, monkeypatch):
    def refused(url, dst, hash_prefix=None, progress=True):  # as torch.hub does: its file first, then the request
        Path(f"{dst}.0123.partial").write_bytes(b"")
        raise ValueError("unknown url type")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refused)
    with pytest.raises(zoo.WeightsUnavailableError, match="ValueError: unknown url type"):
        zoo.fetch_url("https://example.org/x.pth")
    assert list((hub_dir / "checkpoints").iterdir()) == []


def test_a_recorded_file_of_another_size_is_refused_without_reading_it(hub_dir, offline, tic_state_dict, monkeypatch):
    import compressai_transtic.download as download

    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    path = cache / "base_codec_1.pth.tar"
    torch.save({"state_dict": tic_state_dict}, path)
    zoo.tic(1, pretrained=True)  # first use records the hash and the size
    assert zoo.TrustStore(cache).get("base_codec_1.pth.tar").size == path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(64 << 30)  # a sparse 64 GiB file: hashing it would take minutes
    monkeypatch.setattr(download, "sha256_of", lambda p: pytest.fail("the file was hashed"))
    with pytest.raises(zoo.ChecksumMismatchError, match=f"has {64 << 30} bytes, not the .* when first used"):
        zoo.tic(1, pretrained=True)


def test_a_pinned_sha256_verifies_the_file_as_a_manifest_hash_would(hub_dir, offline, tic_state_dict, capsys):
    from compressai_transtic.cli import main

    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    path = cache / "base_codec_2.pth.tar"
    torch.save({"state_dict": tic_state_dict}, path)
    assert main(["models", "--pin", "base_codec_2.pth.tar", "ab" * 32]) == 0
    with pytest.raises(zoo.ChecksumMismatchError, match="you pinned"):
        zoo.tic(2, pretrained=True)
    assert main(["models", "--pin", "base_codec_2.pth.tar", hashlib.sha256(path.read_bytes()).hexdigest()]) == 0
    zoo.tic(2, pretrained=True)
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "present  pinned sha256" in capsys.readouterr().out
    assert main(["models", "--pin", "base_codec_2.pth.tar", "not-a-hash"]) == 2
    assert "is not a sha256" in capsys.readouterr().err
    assert main(["models", "--forget", "my_weights.pth"]) == 2
    assert "not a released weights file" in capsys.readouterr().err


def test_a_damaged_store_of_hashes_is_named_and_nothing_is_loaded(hub_dir, offline, tic_state_dict):
    cache = hub_dir / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"state_dict": tic_state_dict}, cache / "base_codec_1.pth.tar")
    (cache / "compressai-transtic-sha256.json").write_text('{"files": {"base_codec_1.pth.tar": {"sha256": "1')
    with pytest.raises(zoo.TrustStoreError, match="compressai-transtic-sha256.json.*delete it"):
        zoo.tic(1, pretrained=True)


@pytest.mark.parametrize(
    "store",
    [
        "[" * 100_000 + "]" * 100_000,
        json.dumps({"files": {"base_codec_1.pth.tar": {"sha256": "a" * 64, "since": 5}}}),
        json.dumps({"files": {"base_codec_1.pth.tar": {"sha256": "a" * 64 + "\n"}}}),
        json.dumps({"files": {"base_codec_1.pth.tar": {"sha256": "a" * 64, "source": "friend"}}}),
    ],
    ids=["nested", "since-number", "hash-newline", "unknown-source"],
)
def test_a_damaged_trust_store_is_named_by_every_command(hub_dir, store, capsys):
    from compressai_transtic.cli import main

    (hub_dir / "checkpoints").mkdir(parents=True)
    (hub_dir / "checkpoints" / "compressai-transtic-sha256.json").write_text(store)
    assert main(["models"]) == 2
    assert "compressai-transtic-sha256.json" in capsys.readouterr().err


def test_pin_and_forget_are_one_at_a_time(hub_dir, capsys):
    from compressai_transtic.cli import main

    with pytest.raises(SystemExit):
        main(["models", "--pin", "cls_1.pth.tar", "a" * 64, "--forget", "cls_2.pth.tar"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["models", "--forget", ""]) == 2
    assert "'' is not a released weights file" in capsys.readouterr().err
