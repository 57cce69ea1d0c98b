"""compressai_transtic.registration and the startup hook: our names in CompressAI's own tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from installed import BUILTIN_MODELS as OUR_NAMES
from installed import needs_install

from compressai_transtic.registration import ModelEntry, RegistrationError, register_models

REPO = Path(__file__).resolve().parents[1]


def _tables():
    import compressai.registry
    import compressai.zoo
    import compressai.zoo.image

    return {
        "image_models": compressai.zoo.image_models,
        "models": compressai.zoo.models,
        "model_architectures": compressai.zoo.image.model_architectures,
        "cfgs": compressai.zoo.image.cfgs,
        "model_urls": compressai.zoo.image.model_urls,
        "MODELS": compressai.registry.MODELS,
    }


@pytest.fixture
def restore_compressai_tables():
    """Undo, in place, whatever a test adds to CompressAI's tables and zoo module."""
    import compressai.zoo

    tables = _tables()
    saved = {name: dict(table) for name, table in tables.items()}
    saved_attrs = dict(vars(compressai.zoo))
    yield tables
    for name, table in tables.items():
        table.clear()
        table.update(saved[name])
    for attr in set(vars(compressai.zoo)) - set(saved_attrs):
        delattr(compressai.zoo, attr)


def _model_class():
    from compressai_transtic.models import TIC

    return TIC


def _entry(name: str, function=None) -> ModelEntry:
    def zoo_function(quality, metric="mse", pretrained=False, progress=True, **kwargs):
        return _model_class()(**kwargs)

    return ModelEntry(
        name=name,
        zoo_function=function or zoo_function,
        architecture=_model_class(),
        cfgs={1: (128, 192)},
        model_urls={},
    )


def test_entry_is_added_to_every_compressai_table_in_place(restore_compressai_tables):
    import compressai.zoo

    tables = restore_compressai_tables
    ids = {name: id(table) for name, table in tables.items()}
    entry = _entry("test-codec")
    assert register_models([entry]) == ["test-codec"]
    assert tables["image_models"]["test-codec"] is entry.zoo_function
    assert tables["models"]["test-codec"] is entry.zoo_function
    assert tables["model_architectures"]["test-codec"] is entry.architecture
    assert tables["MODELS"]["test-codec"] is entry.architecture
    assert tables["cfgs"]["test-codec"] == {1: (128, 192)}
    assert tables["model_urls"]["test-codec"] == {}
    assert compressai.zoo.test_codec is entry.zoo_function
    assert {name: id(table) for name, table in _tables().items()} == ids


def test_registering_twice_is_a_no_op(restore_compressai_tables):
    entry = _entry("test-codec")
    register_models([entry])
    before = {name: dict(table) for name, table in restore_compressai_tables.items()}
    assert register_models([entry]) == []
    assert {name: dict(table) for name, table in restore_compressai_tables.items()} == before


def test_name_taken_by_compressai_is_an_error_and_changes_nothing(restore_compressai_tables):
    tables = restore_compressai_tables
    before = {name: dict(table) for name, table in tables.items()}
    with pytest.raises(RegistrationError, match="bmshj2018-factorized"):
        register_models([_entry("bmshj2018-factorized")])
    assert {name: dict(table) for name, table in tables.items()} == before


def test_name_taken_by_another_object_is_an_error(restore_compressai_tables):
    register_models([_entry("test-codec")])
    with pytest.raises(RegistrationError, match="test-codec"):
        register_models([_entry("test-codec")])  # same name, a different function


def test_zoo_attribute_taken_by_something_else_is_an_error(restore_compressai_tables):
    import compressai.zoo

    compressai.zoo.test_codec = object()
    with pytest.raises(RegistrationError, match="compressai.zoo.test_codec"):
        register_models([_entry("test-codec")])
    assert "test-codec" not in restore_compressai_tables["image_models"]


def test_good_entries_are_registered_when_another_fails(restore_compressai_tables):
    with pytest.raises(RegistrationError, match=r"mbt2018.*registered: test-codec") as caught:
        register_models([_entry("mbt2018"), _entry("test-codec")])
    assert "test-codec" in restore_compressai_tables["image_models"]
    # the error says which were registered and which not (the startup hook's warning repeats both)
    assert caught.value.registered == ["test-codec"]
    assert [problem.split(":")[0] for problem in caught.value.problems] == ["cannot register model 'mbt2018'"]


@pytest.mark.parametrize("name", ["", "a.b", "has space", "test-vbr"])
def test_entry_names_must_suit_compressai(name):
    with pytest.raises(RegistrationError, match="invalid model name"):
        _entry(name)


@needs_install
def test_builtin_models_are_declared_in_the_entry_point_group(restore_compressai_tables):
    from compressai_transtic.registration import discover_entries

    entries = {e.name: e for e in discover_entries()}
    assert set(OUR_NAMES) <= set(entries)
    register_models()
    for name in OUR_NAMES:
        assert name in restore_compressai_tables["image_models"]
        assert name in restore_compressai_tables["model_architectures"]
    assert register_models() == []


def _run(code: str, env_extra: dict, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, *flags, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_hook_module_imports_neither_torch_nor_compressai(tmp_path):
    result = _run(
        "import compressai_transtic._autoregister", {"PYTHONPATH": str(REPO)}, "-S", "-X", "importtime", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    modules = [
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "compressai_transtic._autoregister" in modules
    assert not [m for m in modules if m.split(".")[0] in ("torch", "compressai")]


PTH_LINE = (REPO / "compressai_transtic_autoregister.pth").read_text()


def test_pth_line_is_silent_when_the_package_is_gone(tmp_path):
    result = _run(PTH_LINE + "\nimport sys; assert 'compressai_transtic' not in sys.modules", {}, "-S", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


def test_pth_line_reports_a_broken_package_without_failing(tmp_path):
    broken = tmp_path / "compressai_transtic"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('broken on purpose')\n")
    result = _run(PTH_LINE + "\nprint('started')", {"PYTHONPATH": str(tmp_path)}, "-S", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == "started"
    assert "startup hook failed" in result.stderr and "broken on purpose" in result.stderr


def test_pth_file_is_a_single_import_line():
    lines = [line for line in PTH_LINE.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("import ")
