"""``crypto-lakehouse plan`` installed from a wheel: the default config and the schema are
the copies inside the package (``crypto_lakehouse/workflow/config``), not a ``config/``
next to the package folder (site-packages has none)."""

from __future__ import annotations

import shutil

import yaml

from crypto_lakehouse import cli, preview
from tests.conftest import REPO_ROOT


def test_plan_reads_the_config_of_the_workflow_the_package_runs(tmp_path, monkeypatch):
    # A wheel's layout: site-packages/crypto_lakehouse/workflow/{Snakefile,rules,config}.
    package = tmp_path / "site-packages" / "crypto_lakehouse"
    workflow = package / "workflow"
    (workflow / "rules").mkdir(parents=True)
    (workflow / "Snakefile").write_text("")
    shutil.copytree(REPO_ROOT / "config", workflow / "config")
    default = yaml.safe_load((workflow / "config" / "config.yaml").read_text())
    default["data_dir"] = str(tmp_path / "installed-default")
    (workflow / "config" / "config.yaml").write_text(yaml.safe_dump(default))
    monkeypatch.setattr(cli, "PACKAGE_DIR", package)

    config = preview.load_config()

    assert config["data_dir"] == str(tmp_path / "installed-default")
