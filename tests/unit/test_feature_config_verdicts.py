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
