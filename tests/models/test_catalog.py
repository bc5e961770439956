"""Naming a base: installed models by name, clear errors with the install command otherwise."""

import json

import pytest

from learner.base import SMALL, check_base, default_base, parse_base
from models.catalog import CATALOG, DEFAULT_MODEL, CatalogModel
from settings import SHIPPED_CHECKPOINT


def absent_model() -> CatalogModel:
    return CatalogModel(name="absent", description="", licence="", install="pip install absent-model-package",
                        package="absent_model_package_xyz", chat=True, tokenizer="", _locate=lambda: None,
                        _files=list)


def test_a_model_that_is_not_installed_says_how_to_install_it(monkeypatch):
    model = absent_model()
    assert not model.installed() and model.size_bytes() is None
    with pytest.raises(ValueError, match="not installed; install it with: pip install absent-model-package"):
        model.path()
    monkeypatch.setitem(CATALOG, "absent", model)
    with pytest.raises(ValueError, match="pip install absent-model-package"):
        check_base("absent")


def test_names_paths_and_presets_resolve(tmp_path):
    assert parse_base(SMALL) == SHIPPED_CHECKPOINT
    assert parse_base(DEFAULT_MODEL) is CATALOG[DEFAULT_MODEL]
    check_base(SMALL)
    with pytest.raises(ValueError, match="is not a model"):
        check_base(str(tmp_path / "nothing.gguf"))
    assert default_base() == (DEFAULT_MODEL if CATALOG[DEFAULT_MODEL].installed() else SMALL)


def test_models_list_names_every_base_and_one_default(capsys):
    from agent.cli import main

    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == [SMALL, *CATALOG]
    assert [row["name"] for row in rows if row["default"]] == [default_base()]
    for row in rows:
        assert row["licence"] and row["install"] and row["tokenizer"]
        assert (row["size_bytes"] is not None) == row["installed"]
