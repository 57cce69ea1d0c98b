"""Every command that writes files says clearly when it cannot, before doing the work.

An output under a regular file (``a-file/out``) cannot be created by anyone, root
included; a folder without write permission is tried too where the tests do not run
as root (root may write anywhere).
"""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compressai_transtic import complexity
from compressai_transtic.cli import main
from compressai_transtic.fileio import (
    OutputError,
    UnreadableSaveError,
    atomic_torch_save,
    atomic_write_text,
    check_writable_folder,
)


@pytest.fixture
def blocker(tmp_path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("keep me")
    return path


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def curves(tmp_path):
    paths = []
    for name, shift in (("a", 0.0), ("b", 1.0)):
        path = tmp_path / f"{name}.json"
        path.write_text(
            json.dumps(
                {
                    "name": name,
                    "results": {
                        "bpp": [0.1, 0.2, 0.4, 0.8],
                        "psnr-rgb": [28 + shift, 30 + shift, 32 + shift, 34 + shift],
                    },
                }
            )
        )
        paths.append(path)
    return paths


def _refused(capsys, status: int, blocker: Path) -> str:
    captured = capsys.readouterr()
    assert status == 2, captured
    assert "Traceback" not in captured.err and str(blocker) in captured.err, captured.err
    assert blocker.read_text() == "keep me"  # nothing written over or next to it
    return captured.err


def test_eval_refuses_an_unwritable_output_before_building_models(classification_set, blocker, capsys):
    status = main(
        [
            "eval",
            str(classification_set),
            "-a",
            "tic",
            "-q",
            "1",
            "--random-weights",
            "--crop",
            "64",
            "-o",
            str(blocker / "out"),
            "--no-progress",
        ]
    )
    err = _refused(capsys, status, blocker)
    assert err.startswith("[RANDOM WEIGHTS] error: evaluation output folder") and "is a file, not a folder" in err


def test_plot_and_compare_refuse_an_unwritable_output(curves, blocker, capsys):
    err = _refused(capsys, main(["plot", *map(str, curves), "-o", str(blocker / "p.png")]), blocker)
    assert err.startswith("error: plot folder")
    err = _refused(capsys, main(["compare", *map(str, curves), "--json", str(blocker / "c.json")]), blocker)
    assert err.startswith("error: --json folder")


def test_encode_decode_and_bitmap_refuse_an_unwritable_output(image, tmp_path, blocker, capsys):
    common = ["--random-weights", "--no-progress"]
    err = _refused(capsys, main(["encode", str(image), "-o", str(blocker / "enc"), "--model", "tic", *common]), blocker)
    assert err.startswith("[RANDOM WEIGHTS] error:") or err.startswith("error:")
    assert main(["encode", str(image), "-o", str(tmp_path / "enc"), "--model", "tic", *common]) == 0
    capsys.readouterr()
    coded = next((tmp_path / "enc").glob("*.ttic"))
    _refused(capsys, main(["decode", str(coded), "-o", str(blocker / "dec"), "--no-progress"]), blocker)
    _refused(
        capsys,
        main(["bitmap", str(image), "--models", "tic", "--random-weights", "-o", str(blocker / "m.png")]),
        blocker,
    )


def test_the_complexity_report_refuses_an_unwritable_output_before_measuring(blocker, capsys, monkeypatch):
    monkeypatch.setattr(complexity, "table_a1", lambda *a, **k: pytest.fail("measured before checking the output"))
    _refused(capsys, complexity.main(["--json", str(blocker / "a1.json")]), blocker)
    _refused(capsys, complexity.main(["--variant", "tic", "--csv", str(blocker / "a1.csv")]), blocker)


def test_the_complexity_report_measures_only_the_variants_asked_for(capsys, monkeypatch):
    assert [r["variant"] for r in complexity.select_rows(["tic", "STB-12"])] == ["TIC", "STB-12"]
    # "deep" is four rows of the paper's table: Deep, Enc IP + Dec TP, 16 prompts and STB-1234
    assert {r["variant"] for r in complexity.select_rows(["deep"])} == {
        "Deep",
        "Enc IP + Dec TP",
        "16 prompts",
        "STB-1234",
    }
    assert complexity.main(["--variant", "nonsense"]) == 2
    assert "unknown variant(s) nonsense" in capsys.readouterr().err


def test_a_failed_write_names_the_file_and_leaves_no_partial_file(blocker):
    with pytest.raises(OutputError, match=f"cannot write {blocker}/x.json"):
        atomic_write_text(blocker / "x.json", "{}")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_writable_folder(blocker / "deeper" / "still")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_that_permissions_call_writable_but_refuses_files_is_refused(tmp_path):
    with pytest.raises(OutputError, match="/proc is not writable"):  # even for root
        check_writable_folder("/proc/compressai-transtic-test/out")
    assert check_writable_folder(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert list(tmp_path.iterdir()) == []  # the check leaves nothing behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="is not writable"):
            check_writable_folder(folder / "out")
        with pytest.raises(OutputError, match="cannot write"):
            atomic_write_text(folder / "x.txt", "x")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("size", [["-5", "64"], ["0", "0"], ["100000", "100000"]])
def test_complexity_refuses_sizes_it_cannot_count_at(size, capsys):
    assert complexity.main(["--variant", "tic", "--size", *size]) == 2
    assert f"--size {size[0]} {size[1]}: sides must be positive" in capsys.readouterr().err


def test_complexity_keeps_existing_files_unless_forced(tmp_path, capsys):
    kept = tmp_path / "keep.txt"
    kept.write_text("mine")
    assert complexity.main(["--variant", "tic", "--json", str(kept)]) == 2
    assert "keep.txt exists; pass --force" in capsys.readouterr().err and kept.read_text() == "mine"
    same = str(tmp_path / "c.json")
    assert complexity.main(["--variant", "tic", "--json", same, "--csv", same]) == 2
    assert "--json and --csv name the same file" in capsys.readouterr().err


class Kind(enum.Enum):
    A = "a"


def test_a_torch_file_that_would_not_load_with_weights_only_is_not_written(tmp_path):
    target = tmp_path / "adapter.pth"
    target.write_bytes(b"the previous file")
    message = r"adapter\.pth was not written: .*weights_only=True \(the object\['config'\]\['kind'\] is a [\w.]*Kind\)"
    with pytest.raises(UnreadableSaveError, match=message):
        atomic_torch_save({"config": {"kind": Kind.A}, "w": torch.zeros(2)}, target)
    assert target.read_bytes() == b"the previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.pth"]  # no temporary file left
    atomic_torch_save({"config": {"kind": "a"}, "w": torch.ones(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
