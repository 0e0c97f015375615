"""`compare` options: a value compare cannot use is refused before anything is compared,
with exit 2 and a one-line error naming the option (docs/compare.md, "Output and exit code")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import crypto_lakehouse.compare as compare_package
from crypto_lakehouse.cli import main as cli_main
from crypto_lakehouse.cli import parse_args
from crypto_lakehouse.compare import Options, compare_dirs
from tests.conftest import FIXTURES

LEGACY = FIXTURES / "legacy-v1-real"


@pytest.fixture
def no_comparison(monkeypatch):
    """compare_dirs replaced by a failure: an option error must come before any comparing."""

    def compared(*args, **kwargs):
        raise AssertionError("compared despite an invalid option")

    monkeypatch.setattr(compare_package, "compare_dirs", compared)


def refused(argv: list[str], capsys) -> str:
    """The error of a command line argparse refuses (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        cli_main(["compare", str(LEGACY), str(LEGACY), *argv])
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


NOT_BINANCE_INTERVALS = ["7m", "2m", "90s", "1mo", "1M", "m"]


@pytest.mark.parametrize("interval", NOT_BINANCE_INTERVALS)
def test_an_interval_binance_has_no_klines_of_is_refused(interval, capsys, no_comparison):
    error = refused(["--interval", interval], capsys)
    assert f"argument --interval: {interval!r}" in error and "valid values: 1s, 1m, 3m" in error


@pytest.mark.parametrize("interval", NOT_BINANCE_INTERVALS)
def test_compare_dirs_raises_on_such_an_interval(interval):
    with pytest.raises(ValueError, match=f"interval {interval!r}"):
        compare_dirs(LEGACY, LEGACY, interval=interval)


# Binance's kline intervals (API docs, "Kline/Candlestick data"), but 1M: a calendar month
BINANCE_FIXED_INTERVALS = "1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w".split()


@pytest.mark.parametrize("interval", BINANCE_FIXED_INTERVALS)
def test_every_fixed_binance_interval_is_accepted(interval):
    args = parse_args(["compare", "a", "b", "--interval", interval])
    assert args.interval == interval


NOT_TOLERANCES = ["-1", "-1e-9", "nan", "inf", "-inf"]


@pytest.mark.parametrize("option", ["--price-tolerance", "--funding-tolerance"])
@pytest.mark.parametrize("value", [*NOT_TOLERANCES, "abc"])
def test_a_tolerance_that_is_not_a_finite_number_at_least_0_is_refused(
    option, value, capsys, no_comparison
):
    # `--option=value`: argparse would take "-1e-9" or "-inf" after a space for an option
    error = refused([f"{option}={value}"], capsys)
    reason = "is not a number" if value == "abc" else "is not a tolerance: a finite number >= 0"
    assert f"error: argument {option}: " in error and reason in error


@pytest.mark.parametrize("field", ["price_tolerance", "funding_tolerance"])
@pytest.mark.parametrize("value", NOT_TOLERANCES)
def test_options_refuse_such_a_tolerance(field, value):
    with pytest.raises(ValueError, match=field):
        Options(**{field: float(value)})


@pytest.mark.parametrize("option", ["--price-tolerance", "--funding-tolerance"])
def test_a_tolerance_of_0_is_exact_comparison_and_accepted(option):
    args = parse_args(["compare", "a", "b", option, "0"])
    assert getattr(args, option[2:].replace("-", "_")) == 0.0


def _output_cases(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = {
        "below a file": (a_file / "report.txt", f"{a_file} is not a directory"),
        "a directory": (tmp_path, "is a directory"),
        "on S3": ("s3://bucket/report.txt", "an S3 path"),
    }
    if Path("/proc/self").is_dir():  # a folder that cannot be created, even by root
        cases["in /proc"] = (Path("/proc/nope/report.txt"), "cannot create /proc/nope")
    return cases


def test_an_output_that_cannot_be_written_is_refused_before_comparing(
    tmp_path, capsys, no_comparison
):
    for case, (output, reason) in _output_cases(tmp_path).items():
        code = cli_main(["compare", str(LEGACY), str(LEGACY), "--output", str(output)])
        err = capsys.readouterr().err
        assert code == 2, case
        assert len(err.splitlines()) == 1, (case, err)  # one line, no traceback
        assert err.startswith(f"crypto-lakehouse compare: --output {output}: ") and reason in err, (
            case,
            err,
        )


def test_the_output_folder_is_still_created(tmp_path):
    output = tmp_path / "new" / "deeper" / "report.json"
    argv = ["--trade-types", "um_futures", "--format", "json", "--output", str(output)]
    assert cli_main(["compare", str(LEGACY), str(LEGACY), *argv]) == 0
    assert json.loads(output.read_text())["exit_code"] == 0


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_jobs_count_below_1_or_not_an_integer_is_refused(value, capsys, no_comparison):
    # `--jobs=value`: argparse would take "-1" after a space for an option. 0 became 1.
    error = refused([f"--jobs={value}"], capsys)
    reason = {
        "0": "0 is not a number of processes: an integer >= 1",
        "-1": "-1 is not a number of processes: an integer >= 1",
    }.get(value, f"{value!r} is not an integer")
    assert error.endswith(f"error: argument --jobs/-j: {reason}"), error


@pytest.mark.parametrize("jobs", [0, -2])
def test_compare_dirs_refuses_such_a_jobs_count(jobs):
    with pytest.raises(ValueError, match=f"jobs: {jobs} is not a number of processes"):
        compare_dirs(LEGACY, LEGACY, jobs=jobs)


def test_the_output_folder_is_not_created_when_the_comparison_fails(tmp_path, monkeypatch):
    """The check of --output only tries where the folder would go; the write makes it."""

    def fails(*args, **kwargs):
        raise RuntimeError("the comparison broke")

    monkeypatch.setattr(compare_package, "compare_dirs", fails)
    output = tmp_path / "new" / "deeper" / "report.json"
    with pytest.raises(RuntimeError, match="the comparison broke"):
        cli_main(["compare", str(LEGACY), str(LEGACY), "--output", str(output)])
    assert list(tmp_path.iterdir()) == []
    # An existing folder: nothing is left in it either.
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        cli_main(["compare", str(LEGACY), str(LEGACY), "-o", str(tmp_path / "kept" / "r.txt")])
    assert list((tmp_path / "kept").iterdir()) == []
