"""The JSON Schema: built from the registries, shipped in step with the built-in types, valid,
and met by every file in archs/."""

import json

import pytest
from conftest import ARCHS, ROOT
from jsonschema import Draft202012Validator

from cnnbuild.layers import REGISTRY
from cnnbuild.optim import OPTIMIZERS
from cnnbuild.schedules import SCHEDULES
from cnnbuild.schema import build_schema, schema_text, shipped_schema_text
from cnnbuild.specfile import read_spec

SCHEMA_FILE = ROOT / "schemas" / "cnnbuild.schema.json"


def test_schema_file_is_generated_from_the_built_in_registry():
    assert SCHEMA_FILE.read_text() == schema_text(built_in=True), (
        "schemas/cnnbuild.schema.json is out of date: "
        "run `python -m cnnbuild.schema > schemas/cnnbuild.schema.json`"
    )


def test_the_package_ships_the_same_schema():
    assert shipped_schema_text() == SCHEMA_FILE.read_text()


def test_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(build_schema())


REGISTRIES = {"layer": REGISTRY, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_every_type_and_key_is_in_the_schema_with_a_description(kind):
    """What an editor shows while a spec is written, and what `cnnbuild schema` prints."""
    registry = REGISTRIES[kind]
    defs = json.loads(SCHEMA_FILE.read_text())["$defs"]
    assert defs[kind]["properties"]["type"]["enum"] == sorted(registry)
    for type_name, cls in registry.items():
        block = defs[f"{kind}.{type_name}"]
        assert block["description"], type_name
        graph_keys = {"name", "inputs"} if kind == "layer" else set()
        assert set(block["properties"]) == {"type", *graph_keys, *cls.options}
        assert block["additionalProperties"] is False
        for key, option in cls.options.items():
            assert block["properties"][key]["description"], (type_name, key)
            assert (key in block["required"]) == option.required
            if not option.required:
                assert block["properties"][key]["default"] == option.default


@pytest.mark.parametrize("path", ARCHS, ids=[p.stem for p in ARCHS])
def test_every_arch_validates_and_carries_the_schema_modeline(path):
    read_spec(path)
    assert "# yaml-language-server: $schema=../schemas/cnnbuild.schema.json" in path.read_text()


def test_readme_documents_every_layer_type_and_key():
    readme = (ROOT / "README.md").read_text()
    for type_name, cls in REGISTRY.items():
        assert f"`{type_name}`" in readme, type_name
        for key in cls.options:
            assert f"`{key}`" in readme, (type_name, key)
