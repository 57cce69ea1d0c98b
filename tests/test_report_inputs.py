"""What ``compare``, ``table`` and ``plot`` do with the files they are given: outputs
that would overwrite an input or an existing file, inputs that are not regular files,
too large, ambiguous (a key given twice), incomplete (points without a value) or
measured differently from the first file, and names that hold terminal controls.

Every refusal is one ``error:`` line naming the file, with exit status 2; every point
or curve left out is a warning naming the file and the point.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

from compressai_transtic.cli import main

#: the largest curve file read
MAX_CURVE_BYTES = 64 << 20

QUALITIES = [1, 2, 3, 4]
RATES = [0.1, 0.2, 0.4, 0.8]
TOP1 = [60.0, 66.0, 70.0, 72.5]
PSNR = [28.0, 30.5, 33.0, 35.25]


def curve(name="tic", **changes):
    doc = {
        "name": name,
        "task": "cls",
        "primary_metric": "top1",
        "units": {"top1": "%", "psnr-rgb": "dB"},
        "random_weights": False,
        "results": {"quality": list(QUALITIES), "bpp": list(RATES), "top1": list(TOP1), "psnr-rgb": list(PSNR)},
    }
    results = changes.pop("results", {})
    doc.update(changes)
    doc["results"].update(results)
    return doc


def write(path, doc):
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.fixture
def pair(tmp_path):
    return write(tmp_path / "a.json", curve("tic")), write(
        tmp_path / "b.json", curve("transtic", results={"bpp": [r * 0.8 for r in RATES]})
    )


def refused(capsys, status):
    """The one error line of a refused command."""
    assert status == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def commands(a, b, output=None):
    """The three commands on curves a and b, writing to ``output`` where given."""
    out = [] if output is None else [str(output)]
    return {
        "compare": ["compare", str(a), str(b)] + (["--json", *out] if out else []),
        "table": ["table", str(a), str(b)] + (["-o", *out] if out else []),
        "plot": ["plot", str(a), str(b), "-o", *(out or [str(a.parent / "plot.svg")])],
    }


# ---------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("command", ["compare", "table", "plot"])
@pytest.mark.parametrize("how", ["same path", "hard link", "symbolic link"])
def test_an_output_that_is_one_of_the_inputs_is_refused_even_with_force(pair, tmp_path, capsys, command, how):
    a, _ = pair
    b = write(tmp_path / "b.svg", curve("named like a plot"))  # a curve file may have any name
    target = {"same path": b, "hard link": tmp_path / "b-link.svg", "symbolic link": tmp_path / "b-sym.svg"}[how]
    if how == "hard link":
        os.link(b, target)
    elif how == "symbolic link":
        target.symlink_to(b)
    before = b.read_bytes()
    err = refused(capsys, main([*commands(a, b, target)[command], "--force"]))
    assert err == f"error: {target} is one of the inputs and would be overwritten; choose another " + (
        "--json" if command == "compare" else "-o"
    )
    assert b.read_bytes() == before


@pytest.mark.parametrize("command", ["compare", "table", "plot"])
def test_an_existing_output_is_refused_without_force_before_anything_is_read(pair, tmp_path, capsys, command):
    a, b = pair
    existing = write(tmp_path / "existing.svg", "keep me")
    broken = write(tmp_path / "broken.json", "not json")  # not read: the output is checked first
    err = refused(capsys, main(commands(a, broken, existing)[command]))
    assert err == f"error: {existing} exists; pass --force to overwrite it"
    assert existing.read_text() == "keep me"
    assert main([*commands(a, b, existing)[command], "--force"]) == 0
    assert existing.read_text() != "keep me"


# ---------------------------------------------------------------------------- what is read
def _unblock_a_reader(fifo, seconds=10.0):
    """Open ``fifo`` for writing as soon as someone reads it, so that a reader that
    blocks on it gets an empty file rather than hanging the test."""

    def opener():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:  # no reader yet
                time.sleep(0.02)

    threading.Thread(target=opener, daemon=True).start()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("command", ["compare", "table", "plot"])
def test_a_fifo_is_refused_without_being_opened(pair, tmp_path, capsys, command):
    a, _ = pair
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    _unblock_a_reader(fifo)
    err = refused(capsys, main(commands(a, fifo)[command]))
    assert err == f"error: {fifo}: a FIFO (named pipe), not a regular file"


@pytest.mark.parametrize("command", ["compare", "table", "plot"])
def test_a_folder_a_missing_file_and_a_link_loop_are_named_as_such(pair, tmp_path, capsys, command):
    a, _ = pair
    folder = tmp_path / "folder.json"
    folder.mkdir()
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    cases = [
        (folder, "a folder, not a regular file"),
        (tmp_path / "missing.json", "no such file"),
        (loop, "cannot be looked at: "),
    ]
    for path, problem in cases:
        err = refused(capsys, main(commands(a, path)[command]))
        assert err.startswith(f"error: {path}: {problem}")


def test_a_curve_file_above_the_size_limit_is_refused_by_its_size(pair, tmp_path, capsys):
    a, _ = pair
    big = tmp_path / "big.json"
    with open(big, "wb") as f:  # sparse: takes no room on disk
        f.truncate(MAX_CURVE_BYTES + 1)
    err = refused(capsys, main(["compare", str(a), str(big)]))
    assert err.startswith(f"error: {big}: {MAX_CURVE_BYTES + 1} bytes, more than the {MAX_CURVE_BYTES} bytes (64 MiB)")


@pytest.mark.parametrize(
    "text, key",
    [
        ('{"results": {"bpp": [0.1, 0.2], "top1": [1, 2], "bpp": [1, 2]}}', "bpp"),
        ('{"random_weights": true, "random_weights": false, "results": {"bpp": [0.1], "top1": [1]}}', "random_weights"),
    ],
)
@pytest.mark.parametrize("command", ["compare", "table", "plot"])
def test_a_key_given_twice_is_refused_naming_the_file_and_the_key(pair, tmp_path, capsys, command, text, key):
    a, _ = pair
    twice = write(tmp_path / "twice.json", text)
    err = refused(capsys, main(commands(a, twice)[command]))
    assert err == f"error: {twice}: the key '{key}' is given twice in one object; give each field once"


# ---------------------------------------------------------------------------- incomplete curves
def test_plot_and_table_warn_of_each_point_without_a_value_and_give_the_real_bd_reason(pair, tmp_path, capsys):
    a, _ = pair
    gap = write(tmp_path / "gap.json", curve("gap", results={"top1": [60.0, None, 70.0, 72.5]}))
    missing = f"{gap}: the point of quality 2 has no top1 value (null)"
    assert main(["table", str(a), str(gap), "--metric", "top1"]) == 0
    captured = capsys.readouterr()
    assert "| gap | 1 | 0.1000 | 60.00 | n/a |" in captured.out
    assert f"{missing}; such a point shows - in the table" in captured.err
    assert f"no BD-rate for {gap} against {a}: {missing}; BD needs every point" in captured.err
    out = tmp_path / "gap.svg"
    assert main(["plot", str(a), str(gap), "-o", str(out), "--bd-rate"]) == 0
    err = capsys.readouterr().err
    assert f"{missing}; such a point is left out of the plot" in err
    assert "no common range" not in out.read_text() and "point of quality 2 has no top1 value" in out.read_text()


def test_an_empty_curve_stays_in_the_table_with_a_warning(pair, tmp_path, capsys):
    a, _ = pair
    empty = write(tmp_path / "empty.json", {"name": "nothing", "results": {"bpp": [], "top1": []}})
    assert main(["table", str(a), str(empty), "--metric", "top1"]) == 0
    captured = capsys.readouterr()
    assert "| nothing | - | - | - | n/a |" in captured.out
    assert f"{empty}: the curve has no points; it shows - in the table" in captured.err
    assert f"{empty} has 0 points; BD needs at least 2 points per curve" in captured.err
    assert "zero-size array" not in captured.err


@pytest.mark.parametrize(
    "results, reason",
    [
        ({"quality": [2], "bpp": [0.2], "top1": [66.0], "psnr-rgb": [30.0]}, "{test} has 1 point; BD needs at least 2"),
        ({"quality": [], "bpp": [], "top1": [], "psnr-rgb": []}, "{test} has 0 points; BD needs at least 2"),
        ({"top1": [60.0, 66.0, None, 72.5]}, "{test}: the point of quality 3 has no top1 value (null)"),
    ],
    ids=["one point", "no point", "a null value"],
)
def test_compare_says_why_a_curve_cannot_be_compared_naming_the_file(pair, tmp_path, capsys, results, reason):
    a, _ = pair
    test = write(tmp_path / "short.json", curve("short", results=results))
    err = refused(capsys, main(["compare", str(a), str(test)]))
    assert err.startswith(f"error: {test} vs {a}: " + reason.format(test=test))


# ---------------------------------------------------------------------------- curves that differ
@pytest.mark.parametrize("command", ["compare", "table", "plot"])
@pytest.mark.parametrize(
    "change, field, theirs, ours",
    [
        ({"units": {"top1": "1 (fraction)"}}, "units['top1']", "'1 (fraction)'", "'%'"),
        ({"rate_average": "total"}, "'rate_average'", "'total'", "'image' (the default)"),
    ],
    ids=["units", "rate_average"],
)
def test_curves_measured_differently_from_the_first_are_refused(
    pair, tmp_path, capsys, command, change, field, theirs, ours
):
    a, _ = pair
    other = write(tmp_path / "other.json", curve("other", **change))
    err = refused(capsys, main(commands(a, other)[command]))
    assert err == (
        f"error: {other}: {field} is {theirs} but {ours} in {a}, the first file; "
        "curves measured differently cannot be compared"
    )


@pytest.mark.parametrize("command", ["compare", "table", "plot"])
def test_a_curve_of_another_task_is_warned_of(pair, tmp_path, capsys, command):
    a, _ = pair
    other = write(tmp_path / "det.json", curve("det", task="det"))
    assert main(commands(a, other)[command]) == 0
    assert f"{other}: task 'det', but 'cls' in {a}, the first file" in capsys.readouterr().err


# ---------------------------------------------------------------------------- what is printed
ESCAPE = "evil\x1b[2J\x1b]0;title\x07"
ESCAPED = "evil\\x1b[2J\\x1b]0;title\\x07"


@pytest.mark.parametrize("command", ["compare", "table"])
def test_terminal_controls_in_names_are_printed_as_escapes(pair, tmp_path, capsys, command):
    a, _ = pair
    falling = curve(ESCAPE, results={"top1": [60.0, 72.0, 62.0, 73.0]})
    test = write(tmp_path / "esc.json", falling)
    assert main(commands(a, test)[command]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "\x07" not in captured.out + captured.err
    assert ESCAPED in captured.out and f"{ESCAPED}: top1 falls as the rate rises" in captured.err


def test_terminal_controls_in_keys_are_printed_as_escapes(pair, tmp_path, capsys):
    a, _ = pair
    keys = write(tmp_path / "keys.json", curve("keys", results={"\x1b[31mred": [1, 2, 3, 4]}))
    err = refused(capsys, main(["compare", str(keys), str(a), "--metric", "bbox-AP"]))
    assert err.startswith(f"error: {keys}: no metric 'bbox-AP'; available: '\\x1b[31mred', 'bpp'")


def test_table_errors_name_the_file_when_names_repeat(pair, tmp_path, capsys):
    a, _ = pair
    same_name = write(tmp_path / "c.json", curve("tic", primary_metric="bbox-AP"))
    err = refused(capsys, main(["table", str(a), str(same_name), "--metric", "psnr-rgb", "bbox-AP"]))
    assert err.startswith(f"error: {a}: no metric 'bbox-AP'")


def test_table_leaves_out_a_psnr_column_that_a_file_lacks_with_a_note(pair, tmp_path, capsys):
    a, _ = pair
    doc = curve("no-psnr")
    del doc["results"]["psnr-rgb"]
    no_psnr = write(tmp_path / "no-psnr.json", doc)
    assert main(["table", str(a), str(no_psnr)]) == 0
    captured = capsys.readouterr()
    assert "PSNR" not in captured.out and "top-1 accuracy [%]" in captured.out
    assert f"the psnr-rgb column is left out: {no_psnr} has no psnr-rgb" in captured.err


@pytest.mark.parametrize(
    "doc",
    [
        curve("rw", random_weights=list(range(100000))),
        curve("keys", results={**{f"k{i}": [1, 2, 3, 4] for i in range(50000)}, "k7": [1]}),
    ],
    ids=["long random_weights", "many result keys"],
)
def test_messages_about_huge_fields_stay_short(pair, tmp_path, capsys, doc):
    a, _ = pair
    huge = write(tmp_path / "huge.json", doc)
    err = refused(capsys, main(["compare", str(a), str(huge)]))
    assert err.startswith(f"error: {huge}: ") and len(err) < 300


def test_the_list_of_available_metrics_is_shortened(pair, tmp_path, capsys):
    a, _ = pair
    many = write(tmp_path / "many.json", curve("many", results={f"k{i}": [1, 2, 3, 4] for i in range(50000)}))
    err = refused(capsys, main(["compare", str(many), str(a), "--metric", "zz"]))
    assert err.startswith(f"error: {many}: no metric 'zz'; available: 'bpp', ") and err.endswith(" more")
    assert len(err) < 400


def test_compare_help_shows_a_plain_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = capsys.readouterr().out
    assert "BD-rate (% rate change" in out.replace("\n", " ") and "%%" not in out


@pytest.mark.skipif(sys.platform == "win32", reason="file names are not bytes there")
def test_a_file_name_that_is_not_utf8_is_escaped_in_the_table(pair, tmp_path, capsys):
    a, _ = pair
    doc = curve()
    del doc["name"]
    odd = write(tmp_path / os.fsdecode(b"\xff.json"), doc)
    assert main(["table", str(a), str(odd), "--metric", "top1"]) == 0
    assert "| \\udcff | 1 | 0.1000 | 60.00 | +0.00 % |" in capsys.readouterr().out
