"""Known-answer tests of BD-rate / BD-metric and the ``compare`` command."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from compressai_transtic.evaluation.bd import METHODS, bd_metric, bd_rate, falling_steps, overlap_share

RATES = [0.12, 0.21, 0.37, 0.66]
ACCURACY = [61.0, 67.5, 71.2, 73.4]


@pytest.mark.parametrize("method", METHODS)
def test_bd_rate_of_a_curve_against_itself_is_zero(method):
    assert bd_rate(RATES, ACCURACY, RATES, ACCURACY, method) == 0.0
    assert bd_metric(RATES, ACCURACY, RATES, ACCURACY, method) == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_bd_rate_of_a_curve_at_0_8_times_the_rate_is_minus_20_percent(method):
    test_rates = [0.8 * r for r in RATES]
    assert bd_rate(RATES, ACCURACY, test_rates, ACCURACY, method) == pytest.approx(-20.0, abs=1e-9)
    # and the anchor against the test curve costs 25 % more
    assert bd_rate(test_rates, ACCURACY, RATES, ACCURACY, method) == pytest.approx(25.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_bd_on_a_logarithmic_curve_has_closed_form_answers(method):
    # metric = a + b ln(rate): a shift of c in metric is exp(-c / b) - 1 in rate
    a, b, c = 70.0, 4.0, 1.5
    anchor = [a + b * math.log(r) for r in RATES]
    better = [m + c for m in anchor]
    assert bd_metric(RATES, anchor, RATES, better, method) == pytest.approx(c, abs=1e-9)
    assert bd_rate(RATES, anchor, RATES, better, method) == pytest.approx((math.exp(-c / b) - 1) * 100, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_bd_does_not_depend_on_point_order(method):
    order = [2, 0, 3, 1]
    shuffled_r = [RATES[i] for i in order]
    shuffled_m = [ACCURACY[i] for i in order]
    test_r = [0.9 * r for r in RATES]
    assert bd_rate(shuffled_r, shuffled_m, test_r, ACCURACY, method) == pytest.approx(
        bd_rate(RATES, ACCURACY, test_r, ACCURACY, method), abs=1e-9
    )


def test_pchip_and_cubic_agree_on_a_smooth_curve():
    rates = np.geomspace(0.1, 1.0, 6)
    anchor = 75 - 12 * np.exp(-3 * rates)
    test = 75 - 12 * np.exp(-3.6 * rates)
    r1 = bd_rate(rates, anchor, rates, test, "pchip")
    r2 = bd_rate(rates, anchor, rates, test, "cubic")
    assert r1 < 0 and r2 < 0
    assert r1 == pytest.approx(r2, abs=1.0)


def test_bd_rejects_curves_it_cannot_compare():
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate(RATES, ACCURACY, RATES, [m + 50 for m in ACCURACY])
    with pytest.raises(ValueError, match="at least 4 points"):
        bd_rate(RATES[:3], ACCURACY[:3], RATES[:3], ACCURACY[:3], method="cubic")
    with pytest.raises(ValueError, match="non-positive"):
        bd_rate([0.0, 0.1], [1.0, 2.0], [0.1, 0.2], [1.0, 2.0])
    with pytest.raises(ValueError, match="unknown BD method"):
        bd_rate(RATES, ACCURACY, RATES, ACCURACY, method="linear")


def write_curve(path, name, rates, values, metric="top1", random_weights=False):
    path.write_text(
        json.dumps(
            {
                "name": name,
                "description": "test",
                "primary_metric": metric,
                "random_weights": random_weights,
                "results": {"bpp": list(rates), metric: list(values)},
            }
        )
    )
    return path


def test_compare_command_prints_and_writes_the_deltas(tmp_path, capsys):
    from compressai_transtic.cli import main

    a = write_curve(tmp_path / "a.json", "tic", RATES, ACCURACY)
    b = write_curve(tmp_path / "b.json", "transtic", [0.8 * r for r in RATES], ACCURACY)
    assert main(["compare", str(a), str(b), "--json", str(tmp_path / "bd.json")]) == 0
    out = capsys.readouterr().out
    assert "transtic vs tic (top1, pchip): BD-rate -20.00 %" in out
    rows = json.loads((tmp_path / "bd.json").read_text())["comparisons"]
    assert rows[0]["bd_rate"] == pytest.approx(-20.0, abs=1e-9)
    assert rows[0]["bd_metric"] > 0


def test_compare_labels_random_weight_curves_and_reports_bad_metrics(tmp_path, capsys):
    from compressai_transtic.cli import main

    a = write_curve(tmp_path / "a.json", "tic", RATES, ACCURACY, random_weights=True)
    b = write_curve(tmp_path / "b.json", "transtic", RATES, ACCURACY)
    assert main(["compare", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith("[RANDOM WEIGHTS]") for line in lines)
    assert main(["compare", str(a), str(b), "--metric", "bbox-AP"]) == 2
    assert "no metric 'bbox-AP'" in capsys.readouterr().err


def test_compare_reports_the_delta_that_exists_when_the_curves_share_only_metric_values(tmp_path, capsys):
    from compressai_transtic.cli import main

    a = write_curve(tmp_path / "a.json", "tic", RATES, ACCURACY)
    b = write_curve(tmp_path / "b.json", "jpeg", [10 * r for r in RATES], ACCURACY)  # no common rates
    assert main(["compare", str(a), str(b), "--json", str(tmp_path / "bd.json")]) == 0
    out = capsys.readouterr().out
    assert (
        "BD-rate +900.00 % (overlap 100%), BD-top1 n/a (the two curves do not overlap in rate: "
        f"{a} spans 0.12 to 0.66 bpp, {b} spans 1.2 to 6.6 bpp)"
    ) in out
    (row,) = json.loads((tmp_path / "bd.json").read_text())["comparisons"]
    assert row["bd_rate"] == pytest.approx(900.0, abs=1e-9) and row["bd_metric"] is None
    assert "do not overlap" in row["bd_metric_error"]

    c = write_curve(tmp_path / "c.json", "far", [10 * r for r in RATES], [m + 50 for m in ACCURACY])
    assert main(["compare", str(a), str(c), str(b)]) == 2  # neither delta exists for c; b is still compared
    captured = capsys.readouterr()
    assert "jpeg vs tic (top1, pchip): BD-rate +900.00 % (overlap 100%)" in captured.out
    assert (
        f"error: {c} vs {a}: no BD-rate: the two curves do not overlap in metric: {a} spans 61 to 73.4, "
        f"{c} spans 111 to 123.4; no BD-metric: the two curves do not overlap in rate: {a} spans 0.12 to 0.66 bpp, "
        f"{c} spans 1.2 to 6.6 bpp"
    ) in captured.err


def test_each_range_in_a_message_is_named_with_its_own_curve():
    # the anchor (first) and the test curve, each range given after its own name, whichever is higher
    with pytest.raises(ValueError) as low_test:
        bd_rate(RATES, [m + 50 for m in ACCURACY], RATES, ACCURACY, names=("jpeg.json", "tic.json"))
    assert str(low_test.value) == (
        "the two curves do not overlap in metric: jpeg.json spans 111 to 123.4, tic.json spans 61 to 73.4"
    )
    with pytest.raises(ValueError) as high_test:
        bd_metric(RATES, ACCURACY, [10 * r for r in RATES], ACCURACY, names=("jpeg.json", "tic.json"))
    assert str(high_test.value) == (
        "the two curves do not overlap in rate: jpeg.json spans 0.12 to 0.66 bpp, tic.json spans 1.2 to 6.6 bpp"
    )


def test_a_constant_metric_is_named_as_such_and_the_other_delta_still_given(tmp_path, capsys):
    from compressai_transtic.cli import main

    names = ("a.json", "b.json")
    with pytest.raises(ValueError) as both:
        bd_rate(RATES, [0.0] * 4, RATES, [0.0] * 4, names=names)
    assert str(both.value) == (
        "the metric is constant on both curves (a.json: 0 at every point; b.json: 0 at every point): "
        "BD-rate reads the rate as a function of the metric, which must vary between points"
    )
    with pytest.raises(ValueError, match=r"^the metric of b.json is constant \(0 at every point\): BD-rate"):
        bd_rate(RATES, ACCURACY, RATES, [0.0] * 4, names=names)
    with pytest.raises(ValueError, match=r"^the rate of a.json is constant \(0.3 bpp at every point\): BD-metric"):
        bd_metric([0.3] * 4, ACCURACY, RATES, ACCURACY, names=names)
    with pytest.raises(ValueError, match=r"^a.json has the metric 67.5 at two points; BD reads the rate as"):
        bd_rate(RATES, [61.0, 67.5, 67.5, 73.4], RATES, ACCURACY, names=names)
    assert bd_metric(RATES, [0.0] * 4, RATES, [0.0] * 4) == 0.0  # the metric as a function of the rate: 0 everywhere

    # a random network's top-1 of 0 at every rate: no BD-rate, but a BD-metric, each said on its own
    a = write_curve(tmp_path / "a.json", "tic", RATES, [0.0] * 4)
    b = write_curve(tmp_path / "b.json", "transtic", RATES, [0.0] * 4)
    assert main(["compare", str(a), str(b), "--json", str(tmp_path / "bd.json")]) == 0
    out = capsys.readouterr().out
    assert f"BD-rate n/a (the metric is constant on both curves ({a}: 0 at every point; {b}: 0 at every point)" in out
    assert "BD-top1 +0.000 (overlap 100%)" in out and "do not overlap" not in out
    (row,) = json.loads((tmp_path / "bd.json").read_text())["comparisons"]
    assert row["bd_rate"] is None and row["bd_metric"] == 0.0


def test_compare_gives_the_reason_of_each_missing_delta(tmp_path, capsys):
    from compressai_transtic.cli import main

    a = write_curve(tmp_path / "a.json", "tic", RATES, ACCURACY)
    flat = write_curve(tmp_path / "flat.json", "flat", [10 * r for r in RATES], [0.0] * 4)  # no rate in common
    assert main(["compare", str(a), str(flat), "--json", str(tmp_path / "bd.json")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {flat} vs {a}: no BD-rate: the metric of {flat} is constant (0 at every point): BD-rate reads the "
        "rate as a function of the metric, which must vary between points; no BD-metric: the two curves do not "
        f"overlap in rate: {a} spans 0.12 to 0.66 bpp, {flat} spans 1.2 to 6.6 bpp\n"
    )
    (row,) = json.loads((tmp_path / "bd.json").read_text())["comparisons"]
    assert row["bd_rate_error"].startswith(f"the metric of {flat} is constant")
    assert row["bd_metric_error"].startswith("the two curves do not overlap in rate")

    gap = tmp_path / "gap.json"  # a point without a value: one reason for both deltas, given once
    gap.write_text(json.dumps({"name": "gap", "results": {"bpp": RATES, "top1": [61.0, None, 71.2, 73.4]}}))
    assert main(["compare", str(a), str(gap)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {gap} vs {a}: {gap}: point 2 of 4 has no top1 value (null); BD needs every point\n"


def test_overlap_share_is_the_smaller_share_of_either_curves_range():
    shifted = [m + 8.0 for m in ACCURACY]  # [69, 81.4] against [61, 73.4]: 4.4 of 12.4 shared
    assert overlap_share(RATES, ACCURACY, RATES, shifted) == pytest.approx(4.4 / 12.4)
    assert overlap_share(RATES, ACCURACY, RATES, ACCURACY, axis="rate") == 1.0
    inner = [67.0, 70.0]  # wholly inside the anchor: all of it, but only 3 / 12.4 of the anchor
    assert overlap_share(RATES, ACCURACY, RATES[1:3], inner) == pytest.approx(3.0 / 12.4)
    assert overlap_share(RATES, ACCURACY, RATES, [m + 50 for m in ACCURACY]) == 0.0


def test_compare_warns_on_little_overlap_and_gives_the_bd_metric_unit(tmp_path, capsys):
    from compressai_transtic.cli import main

    a = write_curve(tmp_path / "a.json", "tic", RATES, ACCURACY)
    b = write_curve(tmp_path / "b.json", "transtic", RATES, [m + 8.0 for m in ACCURACY])
    for path in (a, b):
        curve = json.loads(path.read_text())
        path.write_text(json.dumps({**curve, "units": {"bpp": "bits per pixel", "top1": "%"}}))
    assert main(["compare", str(a), str(b)]) == 0
    captured = capsys.readouterr()
    assert "BD-rate" in captured.out and "(overlap 35%)" in captured.out
    assert "BD-top1 +8.000 percentage points (overlap 100%)" in captured.out
    assert "share only 35% of their metric range: the delta extrapolates the rest" in captured.err


def test_falling_steps_are_the_rate_steps_over_which_the_metric_drops():
    assert falling_steps(RATES, ACCURACY) == []
    assert falling_steps([0.1, 0.2, 0.3], [50.0, 50.0, 60.0]) == []  # a flat step is no fall
    # found in rate order, whatever the order of the points
    assert falling_steps([0.4, 0.1, 0.3, 0.2], [70.0, 60.0, 66.0, 68.0]) == [(0.2, 68.0, 0.3, 66.0)]
    assert falling_steps([0.1, 0.2, math.nan, 0.3], [60.0, 70.0, 10.0, 65.0]) == [(0.2, 70.0, 0.3, 65.0)]


FALLING = [61.0, 71.2, 67.5, 73.4]  # accuracy drops between the 2nd and 3rd rate


@pytest.mark.parametrize("command", ["compare", "plot", "table"])
def test_bd_commands_warn_of_a_curve_whose_metric_falls_as_the_rate_rises(tmp_path, capsys, command):
    from compressai_transtic.cli import main

    a = write_curve(tmp_path / "a.json", "tic", RATES, ACCURACY)
    b = write_curve(tmp_path / "b.json", "noisy", [0.9 * r for r in RATES], FALLING)
    argv = {
        "compare": ["compare", str(a), str(b), "--json", str(tmp_path / "bd.json")],
        "plot": ["plot", str(a), str(b), "-o", str(tmp_path / "plot.png"), "--bd-rate"],
        "table": ["table", str(a), str(b), "--metric", "top1"],
    }[command]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "noisy: top1 falls as the rate rises (71.2 at 0.189 bpp to 67.5 at 0.333 bpp)" in err
    assert "BD-rate assumes a rising curve" in err and "tic:" not in err
    if command == "compare":
        (row,) = json.loads((tmp_path / "bd.json").read_text())["comparisons"]
        assert row["falling"] == {"anchor": False, "test": True}
    assert main([*argv[:1], str(b), str(a), *argv[3:], "--force"]) == 0  # the anchor is checked too
    assert "noisy: top1 falls" in capsys.readouterr().err


HOSTILE_CURVES = {
    "rate-as-number": ({"results": {"bpp": 5, "top1": [1]}}, "results['bpp'] is a int, not a list"),
    "rate-as-text": ({"results": {"bpp": "124", "top1": [1, 2, 3]}}, "results['bpp'] is a str, not a list"),
    "nested-rates": ({"results": {"bpp": [[0.1]], "top1": [1]}}, "results['bpp'] holds '[0.1]'"),
    "boolean-rate": ({"results": {"bpp": [True], "top1": [1]}}, "results['bpp'] holds 'True'"),
    "huge-rate": ({"results": {"bpp": [10**400], "top1": [1]}}, "results['bpp'] holds '1000000000"),
    "text-quality": ({"results": {"bpp": [0.1], "quality": ["7"], "top1": [1]}}, "expected integers or null"),
    "reference-list": ({"reference": [1], "results": {"bpp": [0.1], "top1": [1]}}, "'reference' is a list"),
    "reference-of-lists": ({"reference": {"top1": [1]}, "results": {"bpp": [0.1], "top1": [1]}}, "reference['top1']"),
    "units-list": ({"units": ["x"], "results": {"bpp": [0.1], "top1": [1]}}, "'units' is a list"),
    "unit-number": ({"units": {"top1": 5}, "results": {"bpp": [0.1], "top1": [1]}}, "units['top1'] is not a string"),
    "task-list": ({"task": ["cls"], "results": {"bpp": [0.1], "top1": [1]}}, "'task' is a list, not a string"),
    "metric-list": ({"primary_metric": ["top1"], "results": {"bpp": [0.1], "top1": [1]}}, "'primary_metric' is a"),
    "metric-object": ({"results": {"bpp": [0.1], "top1": {"a": 1}}}, "results['top1'] is a dict"),
    "random-as-text": ({"random_weights": "false", "results": {"bpp": [0.1], "top1": [1]}}, "not true or false"),
    "nested-too-deep": ("[" * 100000, "is not valid JSON"),
}


@pytest.mark.parametrize("command", ["compare", "plot", "table"])
@pytest.mark.parametrize("document, problem", list(HOSTILE_CURVES.values()), ids=list(HOSTILE_CURVES))
def test_a_hostile_curve_file_is_refused_by_name_and_field(tmp_path, capsys, command, document, problem):
    from compressai_transtic.cli import main

    good = write_curve(tmp_path / "good.json", "tic", RATES, ACCURACY)
    bad = tmp_path / "bad.json"
    bad.write_text(document if isinstance(document, str) else json.dumps(document))
    argv = {
        "compare": ["compare", str(good), str(bad)],
        "plot": ["plot", str(good), str(bad), "-o", str(tmp_path / "plot.png")],
        "table": ["table", str(good), str(bad), "-o", str(tmp_path / "table.md")],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {bad}" in err and problem in err
    assert not (tmp_path / "plot.png").exists() and not (tmp_path / "table.md").exists()


@pytest.mark.parametrize("method", METHODS)
def test_a_bd_rate_beyond_floating_point_is_a_failure_with_a_reason(method):
    tiny, huge = [r * 1e-300 for r in RATES], [r * 1e10 for r in RATES]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning leaks to the terminal
        with pytest.raises(ValueError, match="^BD-rate out of range: "):
            bd_rate(tiny, ACCURACY, huge, ACCURACY, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("delta", [bd_rate, bd_metric])
def test_non_finite_bd_results_are_failures_with_a_reason(method, delta):
    extreme = [-1.7e308, -1e308, 1e308, 1.7e308]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="not a finite number"):
            delta(RATES, extreme, RATES, extreme, method)


def test_compare_gives_the_reason_of_an_out_of_range_bd_rate_in_its_json(tmp_path, capsys):
    from compressai_transtic.cli import main

    a = write_curve(tmp_path / "a.json", "tiny", [r * 1e-300 for r in RATES], ACCURACY)
    b = write_curve(tmp_path / "b.json", "huge", [r * 1e10 for r in RATES], ACCURACY)
    assert main(["compare", str(a), str(b), "--json", str(tmp_path / "bd.json")]) == 2
    assert f"error: {b} vs {a}: no BD-rate: BD-rate out of range" in capsys.readouterr().err
    (row,) = json.loads((tmp_path / "bd.json").read_text())["comparisons"]
    assert row["bd_rate"] is None and row["bd_rate_error"].startswith("BD-rate out of range")


def test_cubic_refuses_repeated_metric_values_as_pchip_does():
    repeated = [60.0, 60.0, 70.0, 70.0]
    for method in ("cubic", "pchip"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # not numpy's RankWarning
            with pytest.raises(
                ValueError, match="the test curve has the metric 60 at two points; .* a different value"
            ):
                bd_rate(RATES, ACCURACY, RATES, repeated, method)
