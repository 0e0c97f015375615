"""Config a person writes: YAML dates, Binance intervals, unknown keys, the lookback notice."""

from __future__ import annotations

import datetime as dt

import jsonschema
import pytest
import yaml

from crypto_lakehouse.configuration import check_user_config, unknown_keys
from crypto_lakehouse.plan import ConfigError, date_range_notice, end_date_notice, resolve_dates
from tests.conftest import REPO_ROOT

SCHEMA = REPO_ROOT / "config" / "config.schema.yaml"
# Binance's kline intervals, as listed in the REST API documentation.
BINANCE = "1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1mo".split()


def user_config(text: str) -> dict:
    return yaml.safe_load(text)


def test_unquoted_yaml_dates_are_accepted_as_iso_strings():
    config = user_config("start_date: 2025-01-01\nend_date: 2025-01-20\n")
    assert isinstance(config["end_date"], dt.date)  # what YAML hands us
    check_user_config(config, SCHEMA)
    assert config["start_date"] == "2025-01-01"
    assert config["end_date"] == "2025-01-20"


def test_yaml_datetime_with_a_time_of_day_is_refused_by_name():
    with pytest.raises(ConfigError, match="end_date"):
        check_user_config(user_config("end_date: 2025-01-20 12:30:00\n"), SCHEMA)


def test_resolve_dates_takes_dates_as_well_as_strings():
    today = dt.date(2026, 1, 1)
    assert resolve_dates(dt.date(2025, 1, 1), dt.date(2025, 1, 20), 30, today) == (
        "2025-01-01",
        "2025-01-20",
    )
    # 30 days ending on 2025-01-20 start 29 days earlier.
    assert resolve_dates(None, dt.date(2025, 1, 20), 30, today) == ("2024-12-22", "2025-01-20")


@pytest.mark.parametrize("interval", BINANCE[: BINANCE.index("1d") + 1])
def test_every_binance_interval_up_to_a_day_is_accepted(interval):
    check_user_config({"interval": interval}, SCHEMA)


@pytest.mark.parametrize("interval", ["3d", "1w"])
def test_a_base_interval_longer_than_a_day_is_refused_with_its_reason(interval):
    with pytest.raises(ConfigError, match=f"'interval': '{interval}' is longer than a UTC day"):
        check_user_config({"interval": interval}, SCHEMA)


def test_resample_targets_may_be_longer_than_a_day():
    config = user_config(
        "resample: {targets: [{trade_type: spot, interval: 3d, offset_step: 12h}]}"
    )
    check_user_config(config, SCHEMA)


def test_a_resample_offset_step_may_be_in_days():
    # docs/config.md: the step must be shorter than the interval and divide it, whatever
    # its unit (the resample stage names the offsets 0d, 1d, 2d); the schema refused days
    config = user_config("resample: {targets: [{trade_type: spot, interval: 3d, offset_step: 1d}]}")
    check_user_config(config, SCHEMA)


@pytest.mark.parametrize("bad", ["7m", "2d", "1M", "60s", "1y"])
def test_a_non_binance_interval_names_the_key_and_lists_the_valid_values(bad):
    with pytest.raises(ConfigError) as err:
        check_user_config({"interval": bad}, SCHEMA)
    message = str(err.value)
    assert f"config key 'interval': {bad!r}" in message
    assert "resample" not in message
    listed = message.split("valid values: ")[1].split()
    # only the values `interval` accepts: not 3d and 1w, refused as longer than a day
    # (before 2026-12-06 the list named them; docs/config.md)
    assert [v.strip(",") for v in listed] == [i for i in BINANCE if i not in ("3d", "1w", "1mo")]


def test_a_non_binance_resample_target_interval_lists_the_values_a_target_accepts():
    config = user_config("resample: {targets: [{trade_type: spot, interval: 7m, offset_step: 0m}]}")
    with pytest.raises(ConfigError) as err:
        check_user_config(config, SCHEMA)
    listed = str(err.value).split("valid values: ")[1].split()
    # 3d yes (test_resample_targets_may_be_longer_than_a_day); 1w is refused (docs/config.md)
    assert [v.strip(",") for v in listed] == [i for i in BINANCE if i not in ("1w", "1mo")]


def test_an_agg_klines_interval_that_does_not_divide_a_day_is_refused_at_start():
    # docs/config.md: agg_klines.intervals divide a day; the check was the datasets rule's
    # own, at planning of that target only, in a form of its own (no "config key")
    config = user_config("agg_klines: {intervals: [1m, 7h, 90s]}")
    with pytest.raises(ConfigError) as err:
        check_user_config(config, SCHEMA)
    assert "config key 'agg_klines.intervals[1]': '7h' does not divide a day" in str(err.value)
    assert "90s" not in str(err.value)  # 960 candles a day


def test_a_run_dir_on_s3_is_named_with_the_other_problems():
    # It was refused alone, after every other check had passed, as "run_dir: … is on S3"
    # (not the "config key" form of docs/config.md)
    with pytest.raises(ConfigError) as err:
        check_user_config({"run_dir": "s3://bucket/runs", "intervall": "1m"}, SCHEMA)
    message = str(err.value)
    assert "config key 'run_dir': 's3://bucket/runs' is on S3" in message
    assert "unknown config key 'intervall'" in message


def test_a_bad_resample_target_interval_names_its_own_key():
    config = user_config(
        "resample:\n  targets:\n"
        "    - {trade_type: spot, interval: 1h, offset_step: 5m}\n"
        "    - {trade_type: spot, interval: 7m, offset_step: 0m}\n"
    )
    with pytest.raises(ConfigError, match=r"'resample\.targets\[1\]\.interval': '7m'"):
        check_user_config(config, SCHEMA)


@pytest.mark.parametrize("where", ["interval: 1mo", "resample: {targets: [{trade_type: spot, "
                                   "interval: 1mo, offset_step: 0m}]}"])  # fmt: skip
def test_1mo_is_refused_with_its_reason(where):
    with pytest.raises(ConfigError, match="calendar month") as err:
        check_user_config(user_config(where), SCHEMA)
    assert "'1mo' is not supported" in str(err.value)


def test_unknown_keys_are_named_with_the_closest_valid_key():
    config = user_config(
        "symbolz: {spot: all}\ndownload: {timeout: 3}\n"
        "generate: {spot: {with_vwapp: true}}\nzzz: 1\n"
    )
    with pytest.raises(ConfigError) as err:
        check_user_config(config, SCHEMA)
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert "unknown config key 'symbolz': did you mean 'symbols'?" in lines[1]
    assert "unknown config key 'download.timeout': did you mean 'timeout_s'?" in lines[2]
    # $ref'd sub-schemas (generate options) are followed too.
    assert "'generate.spot.with_vwapp': did you mean 'with_vwap'?" in lines[3]
    # Nothing close: the valid keys are listed instead of a guess.
    assert "unknown config key 'zzz': valid keys: data_dir, interval," in lines[4]
    assert len(lines) == 5  # no schema dump


def test_unknown_keys_inside_list_items():
    schema = yaml.safe_load(SCHEMA.read_text())
    config = {"resample": {"targets": [{"trade_type": "spot", "intervall": "1h"}]}}
    assert unknown_keys(config, schema) == [
        "unknown config key 'resample.targets[0].intervall': did you mean 'interval'?"
    ]


def test_other_schema_violations_are_one_line_naming_the_key():
    with pytest.raises(ConfigError) as err:
        check_user_config({"download": {"concurrency": 0}}, SCHEMA)
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert "config key 'download.concurrency': 0 is less than the minimum of 1" in lines[1]


@pytest.mark.parametrize(
    ("config", "key", "objections", "expected"),
    [
        (
            {"symbols": {"spot": ["btcusdt"]}},
            "symbols.spot",
            ["'all' was expected", "item [0]: 'btcusdt' does not match '^[A-Z0-9_]+$'"],
            '"all" or a list of symbols',
        ),
        (
            {"shards": 0},
            "shards",
            ["'auto' was expected", "0 is less than the minimum of 1"],
            '"auto" or a number',
        ),
    ],
)
def test_a_value_fitting_none_of_the_forms_says_what_each_form_objected_to(
    config, key, objections, expected
):
    with pytest.raises(ConfigError) as err:
        check_user_config(config, SCHEMA)
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert lines[1].strip().startswith(f"config key {key!r}: ")
    assert "not valid under any of the given schemas" not in lines[1]
    for objection in objections:
        assert objection in lines[1]
    # The first sentence of the key's description (config.schema.yaml).
    assert "Expected: " in lines[1] and expected in lines[1].split("Expected: ")[1]


def test_lookback_notice_only_when_lookback_chose_the_start():
    notice = date_range_notice(
        {"start_date": None, "lookback_days": 30}, "2024-12-22", "2025-01-20"
    )
    assert notice == (
        "klines from 2024-12-22 to 2025-01-20 (lookback_days: 30; set start_date or "
        "lookback_days: null for the whole history)"
    )
    assert date_range_notice({"start_date": "2025-01-01", "lookback_days": 30}, "x", "y") is None
    assert date_range_notice({"start_date": None, "lookback_days": None}, None, "y") is None


def _problems(config: dict) -> list[str]:
    """The problem lines of check_user_config's error (after its heading)."""
    with pytest.raises(ConfigError) as err:
        check_user_config(config, SCHEMA)
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid configuration:"
    return [line.strip() for line in lines[1:]]


def _keys(lines: list[str]) -> list[str]:
    """The config key each problem line names."""
    return [line.split("'")[1] for line in lines]


def test_every_problem_is_reported_at_once_each_key_once():
    # A misspelled key, a non-Binance interval and a schema violation: before, the shards
    # line appeared only once the other two were fixed.
    lines = _problems(user_config("strat_date: x\nshards: -1\ninterval: 2m\n"))
    assert sorted(_keys(lines)) == ["interval", "shards", "strat_date"]
    assert "did you mean 'start_date'?" in lines[_keys(lines).index("strat_date")]
    # jsonschema's own verdicts on the same keys are not repeated.
    assert not any("Additional properties" in line for line in lines)
    assert not any("is not one of" in line for line in lines)


def test_a_misspelled_required_key_is_one_problem():
    config = {"resample": {"targets": [{"trade_type": "spot", "intervall": "1h",
                                        "offset_step": "0m"}]}}  # fmt: skip
    lines = _problems(config)
    assert lines == ["unknown config key 'resample.targets[0].intervall': did you mean 'interval'?"]
    # A required key that is simply absent is still named.
    lines = _problems({"resample": {"targets": [{"trade_type": "spot", "offset_step": "0m"}]}})
    assert lines == ["config key 'resample.targets[0]': 'interval' is a required property"]


def test_a_bad_date_is_reported_with_the_other_problems():
    lines = _problems(user_config("end_date: 2025-01-20 12:30:00\nstart_date: '2025-02-30'\n"
                                  "download: {concurrency: 0}\n"))  # fmt: skip
    assert sorted(_keys(lines)) == ["download.concurrency", "end_date", "start_date"]
    assert "time of day" in lines[_keys(lines).index("end_date")]
    assert "not an ISO date" in lines[_keys(lines).index("start_date")]


def test_an_interval_that_is_not_a_string_is_a_schema_problem_not_a_crash():
    assert _keys(_problems({"interval": ["1m"]})) == ["interval"]


# ------------------------------------------------------------------ empty selections
def test_an_empty_symbol_list_of_a_trade_type_in_use_is_refused_by_name():
    config = user_config("trade_types: [spot, um_futures]\nsymbols: {spot: [], um_futures: []}\n")
    lines = _problems(config)
    assert _keys(lines) == ["symbols.spot", "symbols.um_futures"]
    assert "empty list" in lines[0] and "trade_types" in lines[0]
    # Without trade_types every trade type is in use (the schema default).
    assert _keys(_problems({"symbols": {"cm_futures": []}})) == ["symbols.cm_futures"]


def test_an_empty_symbol_list_of_an_unused_trade_type_is_harmless():
    check_user_config(user_config("trade_types: [spot]\nsymbols: {um_futures: []}\n"), SCHEMA)


def test_no_trade_type_at_all_is_refused():
    assert _keys(_problems({"trade_types": []})) == ["trade_types"]


# ------------------------------------------------------------------ endpoint URLs
URL_KEYS = [("endpoints", k) for k in ("archive", "listing", "spot_api", "um_api", "cm_api")]
URL_KEYS.append(("storage", "endpoint_url"))


@pytest.mark.parametrize(("block", "key"), URL_KEYS)
@pytest.mark.parametrize("url", ["127.0.0.1:9", "data.binance.vision", "ftp://host", "https://"])
def test_an_endpoint_that_is_not_an_http_url_is_refused_by_name(block, key, url):
    lines = _problems({block: {key: url}})
    assert _keys(lines) == [f"{block}.{key}"]
    assert "http:// or https:// URL" in lines[0]
    # Snakemake's validate (the schema alone) refuses it too.
    schema = yaml.safe_load(SCHEMA.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({block: {key: url}}, schema)


@pytest.mark.parametrize("key", [k for _, k in URL_KEYS[:5]])
def test_a_trailing_slash_of_an_endpoint_is_removed(key):
    config = {"endpoints": {key: "http://127.0.0.1:8080/mirror/"}}
    check_user_config(config, SCHEMA)
    assert config["endpoints"][key] == "http://127.0.0.1:8080/mirror"
    config = {"endpoints": {key: "https://data.example//"}}
    check_user_config(config, SCHEMA)
    assert config["endpoints"][key] == "https://data.example"


def test_endpoints_of_the_shipped_kinds_are_accepted_unchanged():
    endpoints = {"archive": "https://data.binance.vision",
                 "listing": "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision",
                 "spot_api": "http://127.0.0.1:8080", "um_api": "http://localhost:9/fapi",
                 "cm_api": "https://dapi.binance.com"}  # fmt: skip
    config = {"endpoints": dict(endpoints), "storage": {"endpoint_url": None}}
    check_user_config(config, SCHEMA)
    assert config["endpoints"] == endpoints


# ------------------------------------------------------------------ dates after today
TODAY = dt.date(2026, 12, 6)


def test_a_start_date_after_today_is_refused_by_name():
    for end in ("2027-06-03", None):
        with pytest.raises(ConfigError, match=r"'start_date': 2027-06-01 is after today") as err:
            resolve_dates("2027-06-01", end, None, TODAY)
        assert "2026-12-06" in str(err.value)
    # Today itself is a valid first day.
    assert resolve_dates("2026-12-06", None, None, TODAY) == ("2026-12-06", "2026-12-06")


def test_an_end_date_after_today_counts_as_today_and_the_run_says_so():
    assert resolve_dates("2026-12-01", "2027-06-03", None, TODAY) == ("2026-12-01", "2026-12-06")
    # The lookback window ends on the capped day, as with end_date unset.
    assert resolve_dates(None, "2027-06-03", 3, TODAY) == resolve_dates(None, None, 3, TODAY)
    config = {"start_date": "2026-12-01", "end_date": "2027-06-03", "lookback_days": None}
    notice = date_range_notice(config, "2026-12-01", "2026-12-06")
    assert notice is not None and len(notice.splitlines()) == 1
    assert "end_date 2027-06-03 is after today (2026-12-06, UTC)" in notice
    # An end date up to today is no news.
    assert end_date_notice("2026-12-06", "2026-12-06") is None
    assert end_date_notice(None, "2026-12-06") is None
    both = date_range_notice({**config, "start_date": None, "lookback_days": 30}, "x", "2026-12-06")
    assert len(both.splitlines()) == 2 and both.startswith("klines from x to 2026-12-06")


def test_snakemake_logs_kept_defaults_to_30_and_a_bad_value_is_refused_by_name():
    from crypto_lakehouse.configuration import fill_defaults, load_schema

    config = user_config("interval: 1m\n")
    check_user_config(config, SCHEMA)
    fill_defaults(config, load_schema(SCHEMA))
    assert config["snakemake_logs_kept"] == 30
    check_user_config(user_config("snakemake_logs_kept: 7\n"), SCHEMA)
    for bad in ("0", "-3", "2.5", "many", "null"):
        with pytest.raises(ConfigError, match="snakemake_logs_kept"):
            check_user_config(user_config(f"snakemake_logs_kept: {bad}\n"), SCHEMA)
