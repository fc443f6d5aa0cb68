"""The JSON Schema: built from the registries, shipped in step with the built-in types, valid,
and met by every file in archs/."""

import json

import pytest
from conftest import ARCHS, ROOT
from jsonschema import Draft202012Validator

from cnnbuild.layers import REGISTRY
from cnnbuild.schema import build_schema, schema_text, shipped_schema_text
from cnnbuild.specfile import read_spec

SCHEMA_FILE = ROOT / "schemas" / "cnnbuild.schema.json"


def test_schema_file_is_generated_from_the_built_in_registry():
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "schemas/cnnbuild.schema.json is out of date: "
        "run `python -m cnnbuild.schema > schemas/cnnbuild.schema.json`"
    )


def test_the_package_ships_the_same_schema():
    assert shipped_schema_text() == SCHEMA_FILE.read_text()


def test_schema_is_valid_draft_2020_12():
    Draft202012Validator.check_schema(build_schema())


def test_schema_layer_types_and_keys_match_the_registry():
    defs = json.loads(SCHEMA_FILE.read_text())["$defs"]
    assert defs["layer"]["properties"]["type"]["enum"] == sorted(REGISTRY)
    for type_name, cls in REGISTRY.items():
        block = defs[f"layer.{type_name}"]
        assert set(block["properties"]) == {"name", "type", "inputs", *cls.options}
        assert block["additionalProperties"] is False
        for key, option in cls.options.items():
            assert block["properties"][key]["description"]
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
