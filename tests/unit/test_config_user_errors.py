"""A user editing the configuration: wrong values named by key at start-up, before any
download (docs/config.md). Each case here passed the checks before 2026-12-06 and went
wrong later (a local folder named ``S3:``, every resample job failing after the downloads)
or named the wrong entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from crypto_lakehouse.configuration import check_user_config
from crypto_lakehouse.plan import ConfigError, check_config
from tests.conftest import REPO_ROOT

SCHEMA = REPO_ROOT / "config" / "config.schema.yaml"


def problems(config: dict) -> list[str]:
    """The lines of check_user_config's error (none: [])."""
    try:
        check_user_config(config, SCHEMA)
    except ConfigError as exc:
        return str(exc).splitlines()[1:]
    return []


@pytest.mark.parametrize(
    "value",
    [
        "S3://bucket/prefix",  # the scheme in capitals: was a local folder "S3:/bucket/prefix"
        "gs://bucket/prefix",  # another store: was a local folder "gs:/bucket/prefix"
        "s3://",  # no bucket: was "s3://: an S3 data dir is s3://bucket[/prefix]", no key
        "s3:///prefix",  # no bucket: was the bucket "prefix"
        "s3:/bucket",  # one slash
        "s3://my bucket/x",  # a blank in the bucket name
    ],
)
def test_a_data_dir_that_is_no_folder_and_no_s3_bucket_is_refused_by_name(value):
    lines = problems({"data_dir": value})
    assert lines == [
        f"  config key 'data_dir': {value!r} is neither a local folder nor an S3 data dir, "
        "s3://bucket or s3://bucket/prefix (docs/storage.md)"
    ]


@pytest.mark.parametrize(
    "value", ["s3://bucket", "s3://bucket/prefix/", "data/binance_data", "~/x", "/srv/a:b"]
)
def test_folders_and_s3_data_dirs_are_accepted(value):
    assert problems({"data_dir": value}) == []


def test_a_run_dir_that_is_a_url_is_refused_by_name():
    # "S3://b/runs" was a local folder "S3:/b/runs" below the working directory
    assert problems({"run_dir": "S3://b/runs"}) == [
        "  config key 'run_dir': 'S3://b/runs' is a URL, not a local folder (docs/storage.md, "
        "the run directory)"
    ]


def _config(**over) -> dict:
    cfg = {
        "interval": "1m",
        "start_date": None,
        "end_date": None,
        "lookback_days": None,
        "resample": {"targets": [{"trade_type": "spot", "interval": "1h", "offset_step": "5m"}]},
    }
    cfg.update(over)
    return cfg


def test_an_aggregation_of_a_generated_kline_column_is_refused_at_start():
    # docs/config.md: legacy columns keep their legacy rule. Such an entry passed the start-up
    # checks and failed every resample job ("legacy columns keep their legacy rule"), after
    # the downloads, and held back the features of every symbol.
    config = _config(
        interval="5m",
        resample={
            "targets": [{"trade_type": "spot", "interval": "1h", "offset_step": "5m"}],
            "aggregations": {"open_interest": "mean", "avg_price_5m": "mean", "close": "max"},
        },
    )
    with pytest.raises(ConfigError) as err:
        check_config(config)
    lines = str(err.value).splitlines()[1:]
    assert [line.split(":")[0] for line in lines] == [
        "  config key 'resample.aggregations.avg_price_5m'",
        "  config key 'resample.aggregations.close'",
    ]
    assert "avg_price_5m is a column of the generated klines" in lines[0]
    # a column of another base interval's name is no generated column here
    check_config({**config, "resample": {**config["resample"], "aggregations": {"avg_price_1m": "mean"}}})  # fmt: skip


def test_the_reserved_columns_are_the_generated_klines_columns():
    # the names the start-up check uses without importing pyarrow are the schema's
    from crypto_lakehouse.resample.targets import reserved_columns
    from crypto_lakehouse.resample.windows import FUNDING_PRICE, FUNDING_RATE, FUNDING_TIME
    from crypto_lakehouse.schema import KLINE_SCHEMA

    assert reserved_columns("5m") == (
        *KLINE_SCHEMA.names,
        "avg_price_5m",
        FUNDING_RATE,
        FUNDING_PRICE,
        FUNDING_TIME,
    )


def test_a_resample_target_problem_names_the_entry_by_its_place_in_the_list():
    # Checked per trade type, the entry was numbered within its trade type: the third entry
    # (cm_futures) was "resample target #0".
    targets = [
        {"trade_type": "spot", "interval": "1h", "offset_step": "5m"},
        {"trade_type": "um_futures", "interval": "1h", "offset_step": "5m"},
        {"trade_type": "cm_futures", "interval": "1h", "offset_step": "7m"},
    ]
    with pytest.raises(ConfigError) as err:
        check_config(_config(resample={"targets": targets}))
    (line,) = str(err.value).splitlines()[1:]
    assert line.startswith(
        "  config key 'resample.targets[2]' (cm_futures 1h at offset_step 7m): "
        "offset_step '7m' does not divide the interval '1h'"
    )


def test_a_weekly_resample_target_is_refused_with_its_reason():
    # docs/config.md: 1w is refused because epoch-aligned weekly windows start on Thursdays;
    # the message was "interval '1w' is not a number followed by one of m/h/d"
    config = yaml.safe_load(
        "resample: {targets: [{trade_type: spot, interval: 1w, offset_step: 1d}]}"
    )
    (line,) = problems(config)
    assert line.startswith("  config key 'resample.targets[0].interval': '1w' is not supported:")
    assert "Thursdays" in line


def _write_index(run, trade_type, dataset, **fields):
    from crypto_lakehouse.layout import run_listing_index_path

    path = Path(run_listing_index_path(str(run), trade_type, dataset))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dataset": dataset.split("-")[0], "symbols": {}, **fields}))
    return str(path)


def test_the_closing_lines_name_configured_symbols_without_a_file_at_the_interval(tmp_path, capsys):
    # interval: 5m for symbols the archive holds at 1m only (or 1s for futures, which have
    # no 1s archive): the run built nothing for them and ended as a good one, its closing
    # lines saying "0 symbols" and naming none of them.
    from crypto_lakehouse import plan

    run = tmp_path / "run"
    listings = [
        _write_index(
            run, "spot", "klines-5m", interval="5m", no_files=["ETHUSDT"],
            request={"symbols": ["BTCUSDT", "ETHUSDT"]}, symbols={"BTCUSDT": {}},
        ),
        # symbols: all, where every listed symbol lacks the interval: said, with a count
        _write_index(
            run, "um_futures", "klines-5m", interval="5m",
            no_files=[f"S{i:02d}USDT" for i in range(12)], request={"symbols": "all"},
        ),
        # symbols: all, some symbols with files: those without are normal (old listings)
        _write_index(
            run, "cm_futures", "klines-5m", interval="5m", no_files=["OLD_PERP"],
            request={"symbols": "all"}, symbols={"BTCUSD_PERP": {}},
        ),
    ]  # fmt: skip
    from crypto_lakehouse.layout import run_summary_path
    from crypto_lakehouse.summary import summarize

    summary = tmp_path / run_summary_path("run", "aws_download", "spot")
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps(summarize("aws_download", "spot", [])))
    plan.print_summaries(run)
    lines = capsys.readouterr().out.splitlines()[2:]  # after the summaries' headline
    assert lines == [
        "  spot klines-5m: configured symbols with no archive file at interval 5m, nothing "
        "built for them (config keys symbols.spot, interval): ETHUSDT",
        "  um_futures klines-5m: configured symbols with no archive file at interval 5m, "
        "nothing built for them (config keys symbols.um_futures, interval): "
        + ", ".join(f"S{i:02d}USDT" for i in range(10))
        + ", … (12 in all)",
    ]

    # The index of the interval of an earlier run (or of a trade type since left out) stays
    # in the run directory: the run names only what its own listings say.
    _write_index(run, "spot", "klines-1m", interval="1m", no_files=["X"], not_listed=["Y"])
    plan.print_summaries(run, listings=listings)
    assert capsys.readouterr().out.splitlines()[2:] == lines


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_plan_names_a_data_dir_it_cannot_use_instead_of_a_traceback(tmp_path, emulator, capsys):
    # An s3:// data dir whose store does not answer (and a local folder that cannot be made)
    # ended `plan` with a StorageError / FileNotFoundError traceback naming no config key.
    from crypto_lakehouse import cli

    emu = emulator(mirror_dir=REPO_ROOT / "tests" / "fixtures" / "legacy-v1-real" / "mirror")
    endpoints = {k: emu.base_url for k in ("archive", "listing", "spot_api", "um_api", "cm_api")}
    store = f"http://127.0.0.1:{_closed_port()}"
    for data_dir, storage, expected in (
        ("s3://bucket/data", {"endpoint_url": store, "addressing_style": "path"},
         "config key 'data_dir': s3://bucket/data cannot be used: "),
        ("/proc/crypto_lakehouse_test/data", {},
         "config key 'data_dir': /proc/crypto_lakehouse_test/data cannot be used (No such "
         "file or directory: /proc/crypto_lakehouse_test"),
    ):  # fmt: skip
        cfg = tmp_path / "my.yaml"
        config = {
            "data_dir": data_dir,
            "run_dir": str(tmp_path / "run"),
            "trade_types": ["spot"],
            "symbols": {"spot": ["BTCUSDT"]},
            "start_date": "2020-01-01",
            "end_date": "2020-01-03",
            "endpoints": endpoints,
            "storage": storage,
        }
        if not storage:
            del config["run_dir"], config["storage"]
        cfg.write_text(json.dumps(config))
        assert cli.main(["plan", "--configfile", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("crypto-lakehouse plan: invalid configuration:\n  " + expected), err
        assert "Traceback" not in err


@pytest.mark.parametrize("command", [["workflow", "aws-download", "1m", "--dry-run"], ["plan"]])
def test_a_dotted_config_override_is_named_with_the_map_form(command, capsys):
    # Snakemake refuses `--config symbols.spot=[BTCUSDT]` with a ValueError traceback
    # ("Config entry must start with a valid identifier"), naming no entry; `plan` printed
    # that sentence alone.
    from crypto_lakehouse import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main([*command, "--config", "interval=1m", "symbols.spot=[BTCUSDT]"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert (
        "argument --config: 'symbols.spot=[BTCUSDT]': 'symbols.spot' is not a config key "
        "(--config sets top-level keys); a nested key goes in a map: --config "
        "symbols='{spot: [BTCUSDT]}'"
    ) in err
    assert "Traceback" not in err


def test_a_contract_size_of_a_name_that_is_no_symbol_is_refused():
    # Symbols are [A-Z0-9_]+ (symbols.*): a lowercase key was accepted and never matched a
    # symbol, so the delisted symbol it was meant for still failed for want of its size.
    assert problems({"contract_sizes": {"btcusd_perp": 100, "ETHUSD_PERP": 10}}) == [
        "  config key 'contract_sizes': 'btcusd_perp' does not match '^[A-Z0-9_]+$'"
    ]


def test_an_interval_given_both_as_argument_and_in_config_is_refused_when_they_differ(capsys):
    # The argument was appended to --config last and won: `aws-download 1m --config
    # interval=5m` planned 1m without a word.
    from crypto_lakehouse import cli

    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(["workflow", "aws-download", "1m", "--config", "interval=5m"])
    assert exit_.value.code == 2
    assert (
        "the interval is given twice: 1m (argument) and --config interval=5m: give it once"
        in capsys.readouterr().err
    )
    same = cli.parse_args(["workflow", "aws-download", "5m", "--config", "interval=5m"])
    assert cli.snakemake_argv(same)[-2:] == ["interval=5m", "interval=5m"]


@pytest.mark.parametrize(
    "given,used",
    [
        ("data/binance_data/", "data/binance_data"),
        ("./data//binance_data", "data/binance_data"),
        ("/srv/data/", "/srv/data"),
        ("s3://bucket/prefix/", "s3://bucket/prefix"),
        ("/", "/"),
        ("a/../b", "a/../b"),  # kept: below a symbolic link `..` is no parent
    ],
)
def test_data_dir_and_run_dir_are_used_in_one_spelling(given, used):
    # A trailing slash built paths with "//" (Snakemake warned at every one) and new job
    # arguments: every job of an up-to-date data dir ran again, gen_kline rewrote its files.
    config = {"data_dir": given, "run_dir": None if given.startswith("s3:") else given}
    check_user_config(config, SCHEMA)
    assert config["data_dir"] == used
    assert config["run_dir"] == (None if given.startswith("s3:") else used)


def test_only_the_resample_targets_of_the_trade_types_in_use_are_checked():
    # `--config trade_types='[spot]' interval=1h` with spot's targets set for 1h was refused
    # for the default um_futures and cm_futures targets, which the run never reads.
    targets = [
        {"trade_type": "spot", "interval": "4h", "offset_step": "1h"},
        {"trade_type": "um_futures", "interval": "1h", "offset_step": "5m"},
        {"trade_type": "cm_futures", "interval": "1h", "offset_step": "5m"},
    ]
    check_config(_config(interval="1h", trade_types=["spot"], resample={"targets": targets}))
    with pytest.raises(ConfigError, match=r"'resample\.targets\[1\]' \(um_futures 1h at"):
        check_config(
            _config(
                interval="1h", trade_types=["spot", "um_futures"], resample={"targets": targets}
            )
        )


def _documented_config_overrides() -> list[tuple[str, list[str]]]:
    """(command, --config entries with the interval argument) of every documented
    `plan` / `workflow` command line that gives --config values and no config file."""
    import shlex

    from crypto_lakehouse.cli import build_parser
    from tests.unit.test_docs_examples import COMMANDS

    out = []
    for _, command in COMMANDS:
        argv = shlex.split(command)
        argv = argv[: argv.index("--")] if "--" in argv else argv
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:  # a usage line ([--config key=value ...]): parsed by its own test
            continue
        entries = list(getattr(args, "config", None) or [])
        if getattr(args, "interval", None):
            entries.append(f"interval={args.interval}")
        if args.group in ("plan", "workflow") and entries and not args.configfile:
            out.append((command, entries))
    return out


@pytest.mark.parametrize("command,entries", _documented_config_overrides())
def test_every_documented_config_override_passes_the_checks_of_a_run(command, entries):
    # docs/plan.md's `plan --config interval=1h trade_types='[spot]'` was refused: the
    # default resample targets do not suit 1h (and those of the trade types left out were
    # checked too).
    from crypto_lakehouse import preview

    preview.load_config(None, entries)


def test_a_yte_template_may_repeat_its_keys(tmp_path):
    # Snakemake renders a config file with __use_yte__: true through yte, whose ?if keys
    # may repeat in one map: not a key given twice.
    from crypto_lakehouse.configuration import config_file_problem

    cfg = tmp_path / "my.yaml"
    cfg.write_text(
        "__use_yte__: true\nsymbols:\n  ?if True:\n    spot: all\n  ?if False:\n    spot: all\n"
    )
    assert config_file_problem(cfg) is None
    cfg.write_text("symbols:\n  spot: all\n  spot: [BTCUSDT]\n")
    assert "'symbols.spot' is given twice" in config_file_problem(cfg)


def test_a_schema_already_read_is_used_instead_of_the_file(tmp_path):
    """rules/common.smk reads the schema once for the check and the defaults: the schema
    given is the one checked against (the path only names it)."""
    from crypto_lakehouse.configuration import load_schema

    schema = load_schema(SCHEMA)
    schema["properties"]["shards"] = {"const": "auto"}  # stricter than the file's
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    config["shards"] = 4
    check_user_config(dict(config), SCHEMA)  # the file allows 4
    with pytest.raises(ConfigError, match="shards"):
        check_user_config(dict(config), tmp_path / "absent.yaml", schema)
