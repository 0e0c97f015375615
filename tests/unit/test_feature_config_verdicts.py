"""plan.validate_feature_config_once: the features block is checked with TA-Lib
once per content; a block that passed is not checked again, anything else is."""

from __future__ import annotations

import pytest

from crypto_lakehouse import plan
from crypto_lakehouse.features import spec

GOOD = {"indicators": [{"name": "RSI", "timeperiod": 14}], "microstructure": {"windows": [30]}}


def count_checks(monkeypatch) -> list:
    calls = []
    real = spec.validate_feature_config

    def counting(features):
        calls.append(features)
        return real(features)

    monkeypatch.setattr(spec, "validate_feature_config", counting)
    return calls


def test_a_block_that_passed_is_not_checked_again(tmp_path, monkeypatch):
    calls = count_checks(monkeypatch)
    plan.validate_feature_config_once(GOOD, str(tmp_path), remember=True)
    plan.validate_feature_config_once(dict(GOOD, enabled=True), str(tmp_path), remember=True)
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"{plan.feature_config_key(GOOD)}.ok"]


def test_another_block_is_checked_and_a_bad_one_leaves_no_verdict(tmp_path, monkeypatch):
    calls = count_checks(monkeypatch)
    plan.validate_feature_config_once(GOOD, str(tmp_path), remember=True)
    other = {**GOOD, "indicators": [{"name": "RSI", "timeperiod": 20}]}
    plan.validate_feature_config_once(other, str(tmp_path), remember=True)
    assert len(calls) == 2
    bad = {**GOOD, "indicators": [{"name": "NO_SUCH_FUNCTION"}]}
    for _ in range(2):  # refused every time: nothing remembered
        with pytest.raises(spec.FeatureConfigError, match="NO_SUCH_FUNCTION"):
            plan.validate_feature_config_once(bad, str(tmp_path), remember=True)
    assert len(calls) == 4
    assert len(list(tmp_path.iterdir())) == 2


def test_a_dry_run_reads_verdicts_but_writes_none(tmp_path, monkeypatch):
    calls = count_checks(monkeypatch)
    plan.validate_feature_config_once(GOOD, str(tmp_path / "v"), remember=False)
    plan.validate_feature_config_once(GOOD, str(tmp_path / "v"), remember=False)
    assert len(calls) == 2 and not (tmp_path / "v").exists()


def test_the_verdict_depends_on_talib_and_the_checking_code(monkeypatch, tmp_path):
    key = plan.feature_config_key(GOOD)
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9.9")
    assert plan.feature_config_key(GOOD) != key
    monkeypatch.undo()
    source = tmp_path / "spec.py"
    source.write_text("changed")
    (tmp_path / "microstructure.py").write_text("")
    monkeypatch.setattr(spec, "__file__", str(source))
    assert plan.feature_config_key(GOOD) != key


def test_check_config_names_the_key_with_verdicts(tmp_path):
    config = {
        "interval": "1m",
        "resample": {"targets": []},
        "features": {"enabled": True, "indicators": [{"name": "RSI", "timeperiod": 0}]},
        "start_date": None,
        "end_date": "2024-01-02",
        "lookback_days": None,
    }
    with pytest.raises(plan.ConfigError, match="features.indicators\\[0\\]"):
        plan.check_config(config, str(tmp_path))
    assert not list(tmp_path.iterdir())


# ------------------------------------------------- features.enabled: false (no TA-Lib import)
BAD = {"indicators": [{"name": "RSI", "timeperiod": 14}, {"name": "RSI", "timeperod": 3}]}


def plan_config(features: dict) -> dict:
    return {
        "interval": "1m",
        "resample": {"targets": []},
        "features": features,
        "start_date": None,
        "end_date": "2024-01-02",
        "lookback_days": None,
    }


def count_both_checks(monkeypatch) -> list:
    """Calls of the check itself and of its verdict-keeping wrapper."""
    calls = count_checks(monkeypatch)
    real_once = plan.validate_feature_config_once

    def once(features, verdicts_dir, remember):
        calls.append(("once", features))
        return real_once(features, verdicts_dir, remember)

    monkeypatch.setattr(plan, "validate_feature_config_once", once)
    return calls


@pytest.mark.parametrize("verdicts", [False, True])
def test_a_plan_without_features_does_not_check_them(tmp_path, monkeypatch, verdicts):
    """features.enabled: false: check_config leaves the block (and TA-Lib) alone, even a
    bad block; the features target checks it (check_feature_config, below)."""
    calls = count_both_checks(monkeypatch)
    verdicts_dir = str(tmp_path) if verdicts else None
    plan.check_config(plan_config({**BAD, "enabled": False}), verdicts_dir)
    assert calls == [] and not list(tmp_path.iterdir())
    with pytest.raises(plan.ConfigError, match=r"features\.indicators\[1\].*timeperod"):
        plan.check_config(plan_config({**BAD, "enabled": True}), verdicts_dir)
    assert calls  # enabled: checked at every plan, as before


def test_a_plan_without_features_does_not_import_talib():
    """In a fresh process: TA-Lib imports pandas and polars (~0.5 s of every start)."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from crypto_lakehouse import plan\n"
        "config = {'interval': '1m', 'resample': {'targets': []}, 'start_date': None,\n"
        "          'end_date': '2024-01-02', 'lookback_days': None,\n"
        f"          'features': {dict(GOOD, enabled=False)!r}}}\n"
        "plan.check_config(config)\n"
        "print('talib' in sys.modules)\n"
        "config['features']['enabled'] = True\n"
        "plan.check_config(config)\n"
        "print('talib' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_the_features_target_checks_a_disabled_block(tmp_path):
    for verdicts_dir in (None, str(tmp_path)):
        with pytest.raises(plan.ConfigError) as info:
            plan.check_feature_config(plan_config({**BAD, "enabled": False}), verdicts_dir)
        assert str(info.value).splitlines() == [
            "invalid configuration:",
            "  config key features.indicators[1]: RSI has no parameter 'timeperod' (its "
            "parameters: timeperiod)",
        ]
    plan.check_feature_config(plan_config({**GOOD, "enabled": False}), str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == [f"{plan.feature_config_key(GOOD)}.ok"]


@pytest.fixture
def talib_missing(monkeypatch):
    """TA-Lib neither importable nor installed (metadata)."""
    import importlib.metadata
    import sys

    monkeypatch.setitem(sys.modules, "talib", None)  # import talib raises ImportError
    monkeypatch.setattr(spec, "_TALIB", [])
    spec._talib_functions.cache_clear()
    real_version = importlib.metadata.version

    def version(name):
        if name == "ta-lib":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    yield
    spec._talib_functions.cache_clear()


@pytest.mark.parametrize("verdicts", [False, True])
def test_talib_missing_is_named_when_the_features_are_needed(tmp_path, talib_missing, verdicts):
    verdicts_dir = str(tmp_path) if verdicts else None
    plan.check_config(plan_config({**GOOD, "enabled": False}), verdicts_dir)  # not needed
    for check, enabled in ((plan.check_config, True), (plan.check_feature_config, False)):
        with pytest.raises(plan.ConfigError) as info:
            check(plan_config({**GOOD, "enabled": enabled}), verdicts_dir)
        lines = str(info.value).splitlines()
        assert lines[0] == "invalid configuration:" and len(lines) == 2
        assert lines[1].startswith("  config key 'features': the features need TA-Lib, which ")
        assert "pip install ta-lib" in lines[1]
