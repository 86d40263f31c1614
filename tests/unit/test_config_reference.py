"""The configuration reference is generated from the models: every field described, the page current, and the
JSON Schema an editor gets accepts the shipped configs and rejects what the loader rejects."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from perfray.config_reference import json_schema, reference_markdown, undescribed

REPO = Path(__file__).resolve().parents[2]


def test_every_config_field_has_a_description():
    assert undescribed() == []


def test_the_reference_page_is_current():
    page = (REPO / "docs" / "configuration.md").read_text()
    assert page == reference_markdown() + "\n", "stale: python -m perfray schema --markdown > docs/configuration.md"


@pytest.mark.parametrize("config", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")))
def test_the_json_schema_accepts_every_shipped_config(config):
    jsonschema.validate(yaml.safe_load((REPO / config).read_text()), json_schema())


def test_the_json_schema_rejects_a_misspelt_field_as_the_loader_does():
    doc = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    doc["workload"]["load"]["target_qsp"] = 500
    with pytest.raises(jsonschema.ValidationError, match="target_qsp"):
        jsonschema.validate(doc, json_schema())


def test_schema_command_prints_the_schema():
    out = subprocess.run([sys.executable, "-m", "perfray", "schema"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["title"] == "SweepConfig"
