"""Cross-model tables (Markdown, LaTeX) and the readable names and BD-rate notes of plots.

The BD-rate oracle is analytic: a curve whose rates are all ``s`` times the anchor's,
with the same metric values, needs ``(s - 1) * 100`` % more bits at every accuracy.
"""

from __future__ import annotations

import json

import pytest

from compressai_transtic.cli import main
from compressai_transtic.evaluation.plot import _bd_note
from compressai_transtic.evaluation.results import axis_label, metric_title


def _curve(path, name, scale, random=False):
    rates = [0.1, 0.2, 0.4, 0.8]
    doc = {
        "name": name,
        "task": "cls",
        "primary_metric": "top1",
        "random_weights": random,
        "units": {"top1": "%", "psnr-rgb": "dB"},
        "results": {
            "quality": [1, 2, 3, 4],
            "bpp": [r * scale for r in rates],
            "top1": [60.0, 66.0, 70.0, 72.5],
            "psnr-rgb": [28.0, 30.5, 33.0, 35.25],
        },
    }
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def files(tmp_path):
    return [_curve(tmp_path / "tic-cls.json", "tic", 1.0), _curve(tmp_path / "transtic-cls.json", "trans_tic", 0.8)]


def test_markdown_table_lists_every_point_with_units_and_the_bd_rate(files, capsys):
    assert main(["table", *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "| model | quality | rate [bpp] | top-1 accuracy [%] | PSNR (RGB) [dB] | BD-rate vs tic (top-1 accuracy [%]) |"
    )
    assert lines[1] == "|:---|---:|---:|---:|---:|---:|"
    assert lines[2] == "| tic | 1 | 0.1000 | 60.00 | 28.00 | anchor |"
    assert lines[6] == "| trans_tic | 1 | 0.0800 | 60.00 | 28.00 | -20.00 % |"
    assert lines[7] == "|  | 2 | 0.1600 | 66.00 | 30.50 |  |"
    assert len(lines) == 2 + 8


def test_latex_table_escapes_names_and_units(files, tmp_path, capsys):
    out = tmp_path / "table.tex"
    assert main(["table", *map(str, files), "--metric", "top1", "-o", str(out), "--caption", "ImageNet 50%"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    tex = out.read_text()
    assert tex.startswith("\\begin{table}[t]\n\\centering\n\\caption{ImageNet 50\\%}\n\\begin{tabular}{lrrrr}")
    assert "model & quality & rate [bpp] & top-1 accuracy [\\%] & BD-rate vs tic (top-1 accuracy [\\%]) \\\\" in tex
    assert "trans\\_tic & 1 & 0.0800 & 60.00 & -20.00 \\% \\\\" in tex
    assert tex.count("\\midrule") == 2 and tex.rstrip().endswith("\\end{table}")


def test_table_of_random_weights_says_so_and_bad_input_is_one_line(files, tmp_path, capsys):
    noise = _curve(tmp_path / "noise.json", "noise", 1.0, random=True)
    assert main(["table", str(noise), str(files[0]), "--no-bd-rate"]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("RANDOM WEIGHTS: not meaningful.") and "noise [RANDOM WEIGHTS]" in out and "BD-rate" not in out
    )
    assert main(["table", str(files[0]), "--metric", "bbox-AP"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no metric 'bbox-AP'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "metric, label",
    [
        ("top1", "top-1 accuracy [%]"),
        ("bbox-AP", "box AP [%]"),
        ("segm-AP50", "mask AP50 [%]"),
        ("bbox-APs", "box AP (small) [%]"),
        ("psnr-rgb", "PSNR (RGB) [dB]"),
        ("ms-ssim-rgb", "MS-SSIM (RGB)"),
        ("bpp", "rate [bpp]"),
        ("my-metric", "my-metric [%]"),
    ],
)
def test_metrics_have_readable_names_and_units(metric, label):
    assert axis_label(metric) == label
    assert metric_title("encoding_time") == "encoding time"


def test_plot_legend_can_carry_the_bd_rate_against_the_first_curve(files, tmp_path):
    anchor, test = (json.loads(p.read_text()) for p in files)
    assert _bd_note(anchor, test, "top1") == " (BD-rate -20.0 % vs tic)"
    apart = dict(test, results=dict(test["results"], top1=[90.0, 91.0, 92.0, 93.0]))
    no_overlap = "the two curves do not overlap in metric: the first curve spans 60 to 72.5, this curve spans 90 to 93"
    assert _bd_note(anchor, apart, "top1") == f" (no BD-rate: {no_overlap})"
    assert main(["plot", *map(str, files), "--bd-rate", "-o", str(tmp_path / "p.svg")]) == 0
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    "fmt, cell", [("markdown", "line1\\nline2\\|x"), ("latex", "line1\\textbackslash{}nline2\\textbar{}x")]
)
def test_a_newline_or_bar_in_a_name_does_not_break_the_table_row(tmp_path, capsys, fmt, cell):
    odd = json.loads(_curve(tmp_path / "odd.json", "line1\nline2|x", 1.0).read_text())
    (tmp_path / "odd.json").write_text(json.dumps(odd))
    assert main(["table", str(tmp_path / "odd.json"), "--metric", "top1", "--no-bd-rate", "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert (f"| {cell} | 1 |" if fmt == "markdown" else f"{cell} & 1 &") in out
    rows = [line for line in out.splitlines() if "0.1000" in line]
    assert len(rows) == 1


@pytest.mark.parametrize(
    "name, shown",
    [("\udcff", "\\udcff"), ("_hidden", "_hidden"), ("a$\\foo{$b", "a$\\foo{$b")],
    ids=["lone surrogate", "leading underscore", "dollar signs"],
)
def test_any_curve_name_is_drawn_in_the_legend(tmp_path, name, shown):
    from compressai_transtic.evaluation.plot import plot_curves

    anchor = json.loads(_curve(tmp_path / "a.json", "tic", 1.0).read_text())
    odd = dict(anchor, name=name)
    out = plot_curves([anchor, odd], tmp_path / "p.svg", title=f"{name} vs tic")
    svg = out.read_text()
    assert f"<!-- {shown} -->" in svg or f"<!--  {shown} -->" in svg  # the legend entry
    assert f"<!-- {shown} vs tic -->" in svg  # the title


@pytest.mark.parametrize("dpi", [0, 9, 1201, 150.0, True])
def test_plot_resolution_is_bounded(files, tmp_path, capsys, dpi):
    from compressai_transtic.evaluation.plot import plot_curves

    with pytest.raises(ValueError, match=r"^--dpi .*: the resolution must be an integer from 10 to 1200"):
        plot_curves(files, tmp_path / "p.png", dpi=dpi)
    if type(dpi) is int and dpi < 10:
        with pytest.raises(SystemExit):
            main(["plot", *map(str, files), "-o", str(tmp_path / "q.png"), "--dpi", str(dpi)])
        assert "--dpi: '%d' is not a resolution: give an integer from 10 to 1200" % dpi in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "q.png").exists()
