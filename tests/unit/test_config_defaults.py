"""``configuration.fill_defaults`` fills the schema's defaults exactly as Snakemake's
``validate(config, schema, set_default=True)`` did in ``rules/common.smk`` (issue 11: the
same result without Snakemake's second, pure-Python read of the schema). The reference is
Snakemake's own function, run here on the same configs."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from crypto_lakehouse.configuration import fill_defaults, load_schema
from crypto_lakehouse.plan import ConfigError
from tests.conftest import REPO_ROOT

SCHEMA_PATH = str(REPO_ROOT / "config" / "config.schema.yaml")
DEFAULT = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())


def variants():
    yield "default config", DEFAULT
    for key, value in DEFAULT.items():
        if isinstance(value, dict):  # a block given empty: every default inside it filled
            yield f"{key}: {{}}", {**DEFAULT, key: {}}
    yield "generate.spot only", {**DEFAULT, "generate": {"spot": {"split_gaps": False}}}
    yield "resample without targets", {**DEFAULT, "resample": {"targets": []}}
    yield "nothing but the data dir", {"data_dir": "/tmp/x"}


@pytest.mark.parametrize("name,config", list(variants()), ids=[n for n, _ in variants()])
def test_the_same_config_as_snakemakes_validate(name, config):
    ours, theirs = copy.deepcopy(config), copy.deepcopy(config)
    try:
        validate(theirs, SCHEMA_PATH)
    except WorkflowError:
        with pytest.raises(ConfigError):
            fill_defaults(ours, load_schema(SCHEMA_PATH))
        return
    fill_defaults(ours, load_schema(SCHEMA_PATH))
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)
    assert ours != config or name == "default config"  # the variants do lack defaults


def test_a_violation_names_the_key():
    config = {**copy.deepcopy(DEFAULT), "resample": {"targets": "4h"}}
    with pytest.raises(ConfigError, match="resample"):
        fill_defaults(config, load_schema(SCHEMA_PATH))


def test_plan_fills_the_defaults_as_the_workflow_does(monkeypatch):
    """``crypto_lakehouse plan`` (preview.load_config) fills them with the workflow's
    ``fill_defaults`` too: it called Snakemake's validate, a second implementation of the
    same step and a second, pure-Python read of the schema."""
    import snakemake.utils

    from crypto_lakehouse import configuration, preview

    def refused(*args, **kwargs):
        raise AssertionError("Snakemake's validate called")

    filled = []
    real_fill = configuration.fill_defaults

    def spy(config, schema):
        filled.append(schema["$schema"])
        real_fill(config, schema)

    monkeypatch.setattr(snakemake.utils, "validate", refused)
    monkeypatch.setattr(configuration, "fill_defaults", spy)
    config = preview.load_config(None, ["generate={}"])
    assert len(filled) == 1
    theirs = {**copy.deepcopy(DEFAULT), "generate": {}}
    validate(theirs, SCHEMA_PATH)  # the reference: Snakemake's own (the real one)
    assert config["generate"] == theirs["generate"]
