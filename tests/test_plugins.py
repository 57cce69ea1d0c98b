"""Plugins: the entry points other distributions add to ``compressai_transtic.models``
and ``compressai_transtic.tasks``.

A broken or clashing plugin is refused on its own, named by its entry point and its
distribution; the built-ins and the other plugins keep working, and nothing a plugin
does while importing ends the program. The plugins here are made on the spot (a
``NAME-1.0.dist-info`` folder and a module, put on ``sys.path``), nothing is installed.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, List

import pytest
from installed import BUILTIN_MODELS, needs_install

from compressai_transtic import registration, tasks
from compressai_transtic.registration import RegistrationError, register_models
from compressai_transtic.tasks import available_tasks, get_task_class

REPO = Path(__file__).resolve().parents[1]
BUILTIN_TASKS = ["cls", "det", "fidelity", "seg"]


MODEL_MODULE = """
from compressai_transtic.models import TIC
from compressai_transtic.registration import ModelEntry

def zoo(quality, metric="mse", pretrained=False, progress=True, **kwargs):
    return TIC(**kwargs)

def entry(name):
    return ModelEntry(name, zoo, TIC, {1: (128, 192)}, {})
"""

TASK_MODULE = """
from compressai_transtic.tasks.fidelity import FidelityTask

class MyTask(FidelityTask):
    pass
"""

RAISES = "raise ZeroDivisionError('plugin import failed on purpose')\n"
EXITS = "import sys\nsys.exit(3)\n"

MakePlugin = Callable[..., Path]


def _write_plugin(site: Path, distribution: str, entry_points: str, modules: Dict[str, str]) -> None:
    info = site / f"{distribution}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    for module, code in modules.items():
        (site / f"{module}.py").write_text(code)


@pytest.fixture
def make_plugin(tmp_path, monkeypatch):
    """``make_plugin(distribution, entry_points_txt, {module: code})``: a plugin in its own
    folder, put first on ``sys.path`` (so the last one made comes first); returns the folder."""
    modules: List[str] = []
    monkeypatch.setattr(tasks, "_reported", set(), raising=False)  # each test sees its warnings

    def make(distribution: str, entry_points: str, modules_code: Dict[str, str]) -> Path:
        site = tmp_path / f"site-{distribution}"
        _write_plugin(site, distribution, entry_points, modules_code)
        modules.extend(modules_code)
        monkeypatch.syspath_prepend(str(site))
        return site

    yield make
    for module in modules:
        sys.modules.pop(module, None)


@pytest.fixture
def bare_compressai():
    """CompressAI's tables without the built-in models (as before the startup hook ran),
    restored in place afterwards."""
    import compressai.zoo

    tables = [table for _label, table, _value in registration._tables()]
    saved = [dict(table) for table in tables]
    saved_attrs = dict(vars(compressai.zoo))
    for table in tables:
        for name in BUILTIN_MODELS:
            table.pop(name, None)
    for name in BUILTIN_MODELS:
        vars(compressai.zoo).pop(name.replace("-", "_"), None)
    yield compressai.zoo
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)
    for attr in set(vars(compressai.zoo)) - set(saved_attrs):
        delattr(compressai.zoo, attr)
    vars(compressai.zoo).update(saved_attrs)


def _builtin_tic():
    from compressai_transtic.zoo import TIC_ENTRY

    return TIC_ENTRY.zoo_function


def _python(code: str, *sites: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c code`` with the checkout and ``sites`` on PYTHONPATH (the startup hook runs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *map(str, sites)])
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------- 1. SystemExit on import
@needs_install
def test_a_model_plugin_calling_sys_exit_does_not_end_import_compressai(tmp_path):
    site = tmp_path / "site"
    _write_plugin(
        site, "plug_exit", "[compressai_transtic.models]\nbye = plug_exit_mod:ENTRY\n", {"plug_exit_mod": EXITS}
    )
    result = _python("import compressai.zoo as z; print('tic' in z.models, 'bye' in z.models)", site, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]
    assert "'bye = plug_exit_mod:ENTRY' of distribution 'plug_exit'" in result.stderr
    assert "sys.exit(3)" in result.stderr


@needs_install
def test_a_model_plugin_calling_sys_exit_is_refused_and_the_builtins_register(make_plugin, bare_compressai):
    make_plugin("plug_exit", "[compressai_transtic.models]\nbye = plug_exit_mod:ENTRY\n", {"plug_exit_mod": EXITS})
    with pytest.raises(RegistrationError) as caught:
        register_models()
    assert sorted(caught.value.registered) == sorted(BUILTIN_MODELS)
    [problem] = caught.value.problems
    assert "'bye = plug_exit_mod:ENTRY' of distribution 'plug_exit'" in problem and "sys.exit(3)" in problem
    assert bare_compressai.models["tic"] is _builtin_tic()


def test_a_task_plugin_calling_sys_exit_is_a_plugin_error(make_plugin):
    make_plugin("plug_exit", "[compressai_transtic.tasks]\nbye = plug_exit_mod:T\n", {"plug_exit_mod": EXITS})
    with pytest.raises(tasks.PluginError, match=r"'bye = plug_exit_mod:T' of distribution 'plug_exit'.*sys\.exit\(3\)"):
        get_task_class("bye")
    assert get_task_class("fidelity").name == "fidelity"


# ---------------------------------------------------------------------------- 2. model name clashes
@needs_install
def test_a_plugin_cannot_replace_a_builtin_model(make_plugin, bare_compressai):
    make_plugin(
        "plug_clash",
        "[compressai_transtic.models]\ntic = plug_clash_mod:ENTRY\n",
        {"plug_clash_mod": MODEL_MODULE + "ENTRY = entry('tic')\n"},
    )
    with pytest.raises(RegistrationError, match=r"'tic = plug_clash_mod:ENTRY' of distribution 'plug_clash'"):
        register_models()
    assert bare_compressai.models["tic"] is _builtin_tic()
    assert bare_compressai.tic is _builtin_tic()


@pytest.mark.parametrize("order", [("plug_a", "plug_b"), ("plug_b", "plug_a")])
def test_two_plugins_declaring_one_model_name_are_both_refused(make_plugin, bare_compressai, order):
    for distribution in order:
        module = f"{distribution}_mod"
        make_plugin(
            distribution,
            f"[compressai_transtic.models]\ntwin = {module}:ENTRY\n",
            {module: MODEL_MODULE + "ENTRY = entry('twin')\n"},
        )
    with pytest.raises(RegistrationError) as caught:
        register_models()
    assert "twin" not in bare_compressai.models
    [problem] = [p for p in caught.value.problems if "twin" in p]
    assert "distribution 'plug_a'" in problem and "distribution 'plug_b'" in problem


@needs_install
def test_at_startup_the_warning_names_the_registered_models_and_each_refused_plugin(tmp_path):
    site = tmp_path / "site"
    _write_plugin(
        site,
        "plug_clash",
        "[compressai_transtic.models]\ntic = plug_clash_mod:ENTRY\n",
        {"plug_clash_mod": "ENTRY = 1\n"},
    )
    _write_plugin(
        site, "plug_raise", "[compressai_transtic.models]\nboom = plug_raise_mod:ENTRY\n", {"plug_raise_mod": RAISES}
    )
    result = _python("import compressai.zoo as z; print(z.models['tic'].__module__)", site, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compressai_transtic.zoo"
    registered, _, refused = result.stderr.partition("not registered")
    assert "registered these models with CompressAI: " + ", ".join(BUILTIN_MODELS) in registered
    assert "'tic = plug_clash_mod:ENTRY' of distribution 'plug_clash'" in refused
    assert "'boom = plug_raise_mod:ENTRY' of distribution 'plug_raise'" in refused
    assert "ZeroDivisionError: plugin import failed on purpose" in refused
    assert "unavailable" not in result.stderr


# ---------------------------------------------------------------------------- 3. task name clashes
def test_a_plugin_task_named_like_a_builtin_is_refused_and_the_others_stay(make_plugin, caplog):
    make_plugin(
        "plug_clash", "[compressai_transtic.tasks]\ncls = plug_clash_tasks:MyTask\n", {"plug_clash_tasks": TASK_MODULE}
    )
    make_plugin(
        "plug_good", "[compressai_transtic.tasks]\ngood = plug_good_tasks:MyTask\n", {"plug_good_tasks": TASK_MODULE}
    )
    with caplog.at_level(logging.WARNING, logger="compressai_transtic.tasks"):
        assert available_tasks() == sorted(BUILTIN_TASKS + ["good"])
    assert get_task_class("cls").__name__ == "ClassificationTask"
    assert get_task_class("good").__module__ == "plug_good_tasks"
    assert "'cls = plug_clash_tasks:MyTask' of distribution 'plug_clash' is refused" in caplog.text
    assert "plug_clash_tasks" not in sys.modules  # a refused plugin is not even imported


@pytest.mark.parametrize("order", [("plug_dup_a", "plug_dup_b"), ("plug_dup_b", "plug_dup_a")])
def test_two_plugins_declaring_one_task_name_are_both_refused(make_plugin, caplog, order):
    for distribution in order:
        module = f"{distribution}_tasks"
        make_plugin(distribution, f"[compressai_transtic.tasks]\ndupe = {module}:MyTask\n", {module: TASK_MODULE})
    with caplog.at_level(logging.WARNING, logger="compressai_transtic.tasks"):
        assert available_tasks() == BUILTIN_TASKS
    assert "distribution 'plug_dup_a'" in caplog.text and "distribution 'plug_dup_b'" in caplog.text
    with pytest.raises(tasks.PluginError, match="several distributions declare it"):
        get_task_class("dupe")
    assert get_task_class("fidelity").__name__ == "FidelityTask"


def test_eval_selects_its_tasks_despite_a_task_name_clash(make_plugin):
    from compressai_transtic.evaluation.selection import task_classes

    for distribution in ("plug_dup_a", "plug_dup_b"):
        make_plugin(distribution, f"[compressai_transtic.tasks]\ndupe = {distribution}_tasks:MyTask\n", {})
    args = argparse.Namespace(task=["fidelity"], annotations=None, labels=None)
    assert [cls.__name__ for cls in task_classes(args)] == ["FidelityTask"]


# ---------------------------------------------------------------------------- 4. broken task plugins
def test_a_task_plugin_that_fails_to_import_is_named_in_the_error(make_plugin):
    make_plugin(
        "plug_raise", "[compressai_transtic.tasks]\nboom = plug_raise_tasks:Task\n", {"plug_raise_tasks": RAISES}
    )
    assert "boom" in available_tasks()
    with pytest.raises(tasks.PluginError) as caught:
        get_task_class("boom")
    message = str(caught.value)
    assert "'boom = plug_raise_tasks:Task' of distribution 'plug_raise'" in message
    assert "ZeroDivisionError: plugin import failed on purpose" in message


@pytest.mark.parametrize(
    ("name", "code", "says"),
    [
        ("boom", RAISES, "ZeroDivisionError: plugin import failed on purpose"),
        ("wrong", "Task = 42\n", "names an object of type int, not a subclass of"),
        ("bye", EXITS, "sys.exit(3)"),
    ],
    ids=["raises", "not-a-task", "exits"],
)
def test_eval_with_a_broken_task_plugin_prints_one_error_line(make_plugin, tmp_path, capsys, name, code, says):
    from compressai_transtic.cli import main

    make_plugin(
        "plug_broken", f"[compressai_transtic.tasks]\n{name} = plug_broken_tasks:Task\n", {"plug_broken_tasks": code}
    )
    (tmp_path / "images").mkdir()
    argv = ["eval", str(tmp_path / "images"), "--task", name, "-o", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: task '{name}' ")
    assert f"'{name} = plug_broken_tasks:Task' of distribution 'plug_broken'" in line and says in line


def test_train_with_a_broken_task_plugin_is_a_settings_error_naming_it(make_plugin):
    from compressai_transtic.training.build import resolve_settings
    from compressai_transtic.training.config import ConfigError, TrainConfig

    make_plugin(
        "plug_raise", "[compressai_transtic.tasks]\nboom = plug_raise_tasks:Task\n", {"plug_raise_tasks": RAISES}
    )
    with pytest.raises(ConfigError, match="'boom = plug_raise_tasks:Task' of distribution 'plug_raise'"):
        resolve_settings(TrainConfig(task="boom"))


# ---------------------------------------------------------------------------- 5. names
def test_task_names_that_are_not_simple_identifiers_are_refused_with_an_escaped_warning(make_plugin, caplog):
    entry_points = (
        "[compressai_transtic.tasks]\nmy task = plug_names_tasks:MyTask\nevil\x1b[31mRED = plug_names_tasks:MyTask\n"
    )
    make_plugin("plug_names", entry_points, {"plug_names_tasks": TASK_MODULE})
    with caplog.at_level(logging.WARNING, logger="compressai_transtic.tasks"):
        assert available_tasks() == BUILTIN_TASKS
    assert "task name 'evil\\x1b[31mRED' from entry point" in caplog.text and "\x1b" not in caplog.text
    assert "task name 'my task' from entry point" in caplog.text
    assert f"a task name may hold only {registration.NAME_RULE}" in caplog.text
    assert "plug_names_tasks" not in sys.modules


def test_model_names_that_are_not_simple_identifiers_are_refused_before_loading(make_plugin, bare_compressai):
    make_plugin(
        "plug_names",
        "[compressai_transtic.models]\nevil\x1bname = plug_names_mod:ENTRY\n",
        {"plug_names_mod": MODEL_MODULE + "ENTRY = None\n"},
    )
    with pytest.raises(RegistrationError) as caught:
        register_models()
    message = str(caught.value)
    assert "model name 'evil\\x1bname' from entry point" in message and "\x1b" not in message
    assert f"a model name may hold only {registration.NAME_RULE}" in message
    assert "plug_names_mod" not in sys.modules


# ---------------------------------------------------------------------------- 6. who is a built-in
def _plugin(distribution: str, name: str, value: str, group: str = "compressai_transtic.tasks") -> registration.Plugin:
    return registration.Plugin(distribution, metadata.EntryPoint(name, value, group))


def test_a_third_party_plugin_pointing_into_the_package_is_not_a_builtin(make_plugin, caplog):
    # one third-party entry point names a class of compressai_transtic, the other its own:
    # neither is a built-in, so both are refused, and neither is told it clashes with one
    make_plugin("plug_into", "[compressai_transtic.tasks]\nbar = compressai_transtic.tasks.fidelity:FidelityTask\n", {})
    make_plugin(
        "plug_own", "[compressai_transtic.tasks]\nbar = plug_own_tasks:MyTask\n", {"plug_own_tasks": TASK_MODULE}
    )
    with caplog.at_level(logging.WARNING, logger="compressai_transtic.tasks"):
        assert "bar" not in available_tasks()
    assert "distribution 'plug_into'" in caplog.text and "distribution 'plug_own'" in caplog.text
    assert "built-in" not in caplog.text
    with pytest.raises(tasks.PluginError, match="several distributions declare it"):
        get_task_class("bar")

    into = _plugin("plug_into", "bar", "compressai_transtic.tasks.fidelity:FidelityTask")
    own = _plugin("plug_own", "bar", "plug_own_tasks:MyTask")
    assert not into.builtin
    for plugins in ([into, own], [own, into]):
        chosen, problems = registration.select_plugins(plugins, "task")
        assert chosen == {}
        [(name, why)] = problems
        assert name == "bar" and "several distributions declare it" in why and "built-in" not in why


@pytest.mark.parametrize("order", [("plug_same_a", "plug_same_b"), ("plug_same_b", "plug_same_a")])
def test_two_plugins_declaring_one_name_with_the_same_value_are_both_refused(make_plugin, caplog, order):
    for distribution in order:
        make_plugin(distribution, "[compressai_transtic.tasks]\nsame = plug_same_tasks:MyTask\n", {})
    with caplog.at_level(logging.WARNING, logger="compressai_transtic.tasks"):
        assert available_tasks() == BUILTIN_TASKS
    assert "distribution 'plug_same_a'" in caplog.text and "distribution 'plug_same_b'" in caplog.text
    with pytest.raises(tasks.PluginError, match="several distributions declare it"):
        get_task_class("same")

    plugins = [_plugin(d, "same", "plug_same_tasks:MyTask") for d in order]
    chosen, [(name, why)] = registration.select_plugins(plugins, "task")
    assert chosen == {} and name == "same" and "uninstall all but one" in why


def test_one_distribution_declaring_a_name_twice_keeps_it():
    first, again = (_plugin("plug_twice", "twice", "plug_twice_tasks:MyTask") for _ in range(2))
    # the same distribution under another spelling of its name is still one distribution
    spelled = _plugin("Plug.Twice", "twice", "plug_twice_tasks:MyTask")
    chosen, problems = registration.select_plugins([first, again, spelled], "task")
    assert problems == [] and chosen["twice"].value == "plug_twice_tasks:MyTask"


def test_a_builtin_keeps_its_name_against_any_number_of_third_party_plugins():
    builtin = _plugin("compressai_transtic", "fidelity", "compressai_transtic.tasks.fidelity:FidelityTask")
    same = _plugin("plug_same", "fidelity", "compressai_transtic.tasks.fidelity:FidelityTask")
    other = _plugin("plug_other", "fidelity", "plug_other_tasks:MyTask")
    assert builtin.builtin and not same.builtin
    chosen, problems = registration.select_plugins([same, other, builtin], "task")
    assert chosen == {"fidelity": builtin}
    assert len(problems) == 2
    for distribution in ("plug_same", "plug_other"):
        [why] = [why for _name, why in problems if f"distribution '{distribution}'" in why]
        assert why.endswith(f"is refused: the name belongs to a built-in task of {registration.DISTRIBUTION}")


def test_a_third_party_model_pointing_into_the_package_does_not_stand_for_the_builtins(monkeypatch):
    into = _plugin("plug_into", "tic2", "compressai_transtic.zoo:TIC_ENTRY", registration.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registration, "find_plugins", lambda group: ([into], []))
    _entries, problems = registration._discover()
    assert any("no built-in models" in problem for problem in problems)
