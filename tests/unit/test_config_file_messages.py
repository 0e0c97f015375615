"""A ``--configfile`` Snakemake cannot read is named, with the line and the key, before
Snakemake starts (it printed a traceback ending in ``day is out of range for month`` for
an unquoted ``end_date: 2020-01-40``, a traceback for a missing file, and "Config file is
not valid JSON or YAML" without the file or the line for a syntax error)."""

from __future__ import annotations

import pytest

from crypto_lakehouse import cli
from crypto_lakehouse.configuration import config_file_problem

BAD = [
    # (file text, what the message must say)
    ("trade_types: [spot]\nend_date: 2020-01-40\n", ["line 2", "'end_date'", "2020-01-40"]),
    ("start_date: 2020-13-01\n", ["line 1", "'start_date'", "2020-13-01"]),
    ("symbols:\n  spot: [BTCUSDT]\nx:\n  - 2021-02-30\n", ["line 4", "'x[0]'", "2021-02-30"]),
    ("symbols: {spot: [BTCUSDT]\n", ["line 2", "not valid YAML"]),
    ("trade_types: [spot]\n\tsymbols: x\n", ["line 2", "not valid YAML", "'\\t'"]),
    # Snakemake's "Config file must be given as JSON or YAML with keys at top level" named
    # no file; `plan` failed with a traceback (a list) or took an empty file for no change.
    ("- trade_types: [spot]\n", ["is a list, not a map of config keys"]),
    ("spot\n", ["is a single value ('spot'), not a map of config keys"]),
    ("", ["holds no config keys"]),
    ("# trade_types: [spot]\n", ["holds no config keys"]),
    # YAML keeps the last of two equal keys: the first list was dropped without a word.
    (
        "symbols:\n  spot: [BTCUSDT]\n  um_futures: all\n  spot: [ETHUSDT]\n",
        ["line 4", "'symbols.spot' is given twice (first on line 2)"],
    ),
    ('{"interval": "1m", "interval": "5m"}', ["line 1", "'interval' is given twice"]),
]


@pytest.mark.parametrize("text,expected", BAD)
def test_the_workflow_command_names_the_file_line_and_key(tmp_path, capsys, text, expected):
    cfg = tmp_path / "my.yaml"
    cfg.write_text(text)
    code = cli.main(["workflow", "aws-download", "1m", "--dry-run", "--configfile", str(cfg)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(
        f"crypto-lakehouse workflow aws-download: invalid configuration:\n  config file {cfg}"
    ), err
    for part in expected:
        assert part in err, (part, err)
    assert "Traceback" not in err


def test_plan_names_them_too(tmp_path, capsys):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("end_date: 2020-02-30\n")
    assert cli.main(["plan", "--configfile", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"config file {cfg}, line 1: config key 'end_date': 2020-02-30 is not a date" in err


@pytest.mark.parametrize("text", ["- interval: 5m\n", "", "interval: 1m\ninterval: 5m\n"])
def test_plan_refuses_a_file_that_is_no_single_map_of_keys(tmp_path, capsys, text):
    # a list was an AttributeError traceback; an empty file and a key given twice were
    # planned (Snakemake refuses the first, and keeps the last of the two values)
    cfg = tmp_path / "my.yaml"
    cfg.write_text(text)
    assert cli.main(["plan", "--configfile", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"crypto-lakehouse plan: invalid configuration:\n  config file {cfg}")
    assert "Traceback" not in err


def test_a_missing_config_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert cli.main(["workflow", "aws-download", "--dry-run", "--configfile", str(missing)]) == 1
    assert f"config file {missing}: No such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text",
    [
        "end_date: 2020-02-29\nstart_date: '2020-01-01'\n",  # a leap day, quoted or not
        '{\n\t"trade_types": ["spot"]\n}\n',  # JSON with tabs: Snakemake reads JSON first
        # the same key in two maps is no duplicate
        "symbols: {spot: all}\ndatasets: {spot: [klines]}\n",
    ],
)
def test_a_readable_config_file_has_no_problem(tmp_path, text):
    cfg = tmp_path / "my.yaml"
    cfg.write_text(text)
    assert config_file_problem(cfg) is None
