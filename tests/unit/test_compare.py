"""`compare`: legacy data dir vs ours (issue 15).

Mutations of a copy of the legacy fixture must each be found as unexplained with the right
file, column and time; every explained class is triggered by data built for it here, next to
a control without the evidence, which must stay unexplained. Expected values come from the
fixture files or from the data the test builds, never from compare's own output.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse.cli import main as cli_main
from crypto_lakehouse.compare import Options, compare_dirs
from crypto_lakehouse.compare.explain import FIXES
from crypto_lakehouse.compare.report import render
from crypto_lakehouse.provenance import PROVENANCE_SCHEMA
from crypto_lakehouse.schema import TIME_TYPE
from tests.conftest import FIXTURES, REPO_ROOT

LEGACY = FIXTURES / "legacy-v1-real"
MIN, DAY = 60_000, 86_400_000
D0 = 1_700_006_400_000 - 1_700_006_400_000 % DAY  # a UTC midnight (2023-11-15)
CM_1M = "results_data/cm_futures/klines/1m/BTCUSD_PERP.pqt"
SPOT_1M = "results_data/spot/klines/1m/BTCUSDT.pqt"
UM_1M = "results_data/um_futures/klines/1m/BTCUSDT.pqt"
UM_FUNDING = "parsed_data/um_futures/funding/BTCUSDT.pqt"
UM_API_FUNDING = "api_data/um_futures/funding_rate/BTCUSDT.pqt"


def iso(ms: int) -> str:
    return str(np.datetime64(int(ms) // 1000, "s")).replace("T", " ")


def copy_fixture(tmp_path: Path) -> Path:
    dest = tmp_path / "ours"
    shutil.copytree(LEGACY, dest, ignore=shutil.ignore_patterns("truth", "*.md"))
    return dest


def only(report, **match):
    found = [d for d in report.differences() if all(getattr(d, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [d.to_dict() for d in report.differences()])
    return found[0]


def unexplained(report):
    return [d for d in report.differences() if d.status == "unexplained"]


# ---------------------------------------------------------------- the fixture against itself
def test_fixture_against_an_identical_copy_is_equal_and_exits_0(tmp_path, capsys):
    ours = copy_fixture(tmp_path)
    n_files = sum(1 for _ in (LEGACY / "results_data").rglob("*.pqt")) + sum(
        1 for _ in (LEGACY / "parsed_data").rglob("*.pqt")
    )
    report = compare_dirs(LEGACY, ours)
    assert len(report.pairs) == n_files
    assert all(p.status == "equal" for p in report.pairs)
    assert cli_main(["compare", str(LEGACY), str(ours)]) == 0
    assert "0 unexplained" in capsys.readouterr().out


# ---------------------------------------------------------------- mutations, each unexplained
def _rewrite(path: Path, fn) -> None:
    table = pq.read_table(path)
    pq.write_table(fn(table), path)


def test_changed_price_beyond_tolerance(tmp_path):
    ours = copy_fixture(tmp_path)
    legacy = pq.read_table(LEGACY / SPOT_1M)
    row = 777
    close = legacy.column("close").to_numpy().copy()
    close[row] += 0.01  # 100 × the 1e-4 tolerance
    _rewrite(
        ours / SPOT_1M,
        lambda t: t.set_column(t.schema.get_field_index("close"), "close", pa.array(close)),
    )
    report = compare_dirs(LEGACY, ours)
    d = only(report, status="unexplained")
    assert (d.file, d.kind, d.column, d.count) == (SPOT_1M, "values", "close", 1)
    t = legacy.column("candle_begin_time").cast(pa.int64()).to_numpy()[row]
    assert d.first_time == iso(t)
    assert d.legacy_value == pytest.approx(legacy.column("close")[row].as_py())
    assert d.our_value == pytest.approx(close[row])
    assert report.exit_code() == 1


def test_change_within_tolerance_is_not_a_failure(tmp_path):
    ours = copy_fixture(tmp_path)
    close = pq.read_table(LEGACY / SPOT_1M).column("close").to_numpy() + 5e-5
    _rewrite(
        ours / SPOT_1M,
        lambda t: t.set_column(t.schema.get_field_index("close"), "close", pa.array(close)),
    )
    report = compare_dirs(LEGACY, ours)
    d = only(report, file=SPOT_1M)
    assert (d.status, d.column, d.count) == ("within_tolerance", "close", len(close))
    assert d.max_abs == pytest.approx(5e-5, rel=1e-3)
    assert report.exit_code() == 0


def test_dropped_row_in_the_middle(tmp_path):
    ours = copy_fixture(tmp_path)
    legacy = pq.read_table(LEGACY / SPOT_1M)
    row = legacy.num_rows // 2
    _rewrite(ours / SPOT_1M, lambda t: pa.concat_tables([t.slice(0, row), t.slice(row + 1)]))
    report = compare_dirs(LEGACY, ours)
    d = only(report, status="unexplained")
    t = iso(legacy.column("candle_begin_time").cast(pa.int64()).to_numpy()[row])
    assert (d.file, d.kind, d.side, d.count, d.first_time) == (SPOT_1M, "rows_only", "legacy", 1, t)
    assert d.ranges == [[t, t, 1]]


def test_file_missing_on_our_side(tmp_path):
    ours = copy_fixture(tmp_path)
    rel = "results_data/um_futures/resampled_klines/1h/15m/BTCUSDT.pqt"
    (ours / rel).unlink()
    report = compare_dirs(LEGACY, ours)
    d = only(report, status="unexplained")
    assert (d.file, d.kind, d.side) == (rel, "file_only", "legacy")


def test_column_with_another_type(tmp_path):
    ours = copy_fixture(tmp_path)
    rel = "results_data/um_futures/klines/1m/BTCUSDT.pqt"
    i = pq.read_schema(LEGACY / rel).get_field_index("trade_num")
    _rewrite(ours / rel, lambda t: t.set_column(i, "trade_num", t.column(i).cast(pa.float64())))
    report = compare_dirs(LEGACY, ours)
    d = only(report, status="unexplained")
    assert (d.file, d.kind, d.column) == (rel, "column_type", "trade_num")
    assert (d.legacy_value, d.our_value) == ("int64", "double")


def test_truncated_parquet_is_named_and_the_rest_still_compared(tmp_path):
    ours = copy_fixture(tmp_path)
    rel = "parsed_data/spot/klines/BTCUSDT/1m/202412.pqt"
    data = (ours / rel).read_bytes()
    (ours / rel).write_bytes(data[: len(data) // 2])
    report = compare_dirs(LEGACY, ours)
    d = only(report, status="unexplained")
    assert (d.file, d.kind, d.side) == (rel, "unreadable", "ours")
    assert str(ours / rel) in d.note
    others = [p for p in report.pairs if p.file != rel]
    assert others and all(p.status == "equal" for p in others)


def test_not_a_bhds_dir_and_mismatched_intervals(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli_main(["compare", str(LEGACY), str(empty)])
    assert code == 1
    assert f"NEW_DIR {empty}: not a BHDS data dir" in capsys.readouterr().err
    # a 1m path holding 5m candles
    ours = copy_fixture(tmp_path)
    _rewrite(ours / SPOT_1M, lambda t: t.take(pa.array(np.arange(0, t.num_rows, 5))))
    report = compare_dirs(LEGACY, ours)
    d = only(report, kind="interval")
    assert d.side == "ours" and "300 s apart, not 1m" in d.note and str(ours / SPOT_1M) in d.note
    # a dir whose generated klines are of another interval only
    other = copy_fixture(tmp_path / "x")
    (other / "results_data/spot/klines/1m").rename(other / "results_data/spot/klines/5m")
    report = compare_dirs(LEGACY, other)
    assert any("mismatched intervals" in p and "spot/klines" in p for p in report.problems)
    assert report.exit_code() == 1


@pytest.mark.parametrize("interval", ["3d", "5m"])
def test_an_interval_neither_dir_holds_is_a_problem(tmp_path, capsys, interval):
    # the fixture's generated klines are 1m in every trade type; its resampled 5m and 1h
    # files, made from them, are not compared at another --interval: nothing is
    generated = list((LEGACY / "results_data").glob("*/klines/*/*.pqt"))
    assert {p.parent.name for p in generated} == {"1m"}
    held = {p.parents[2].name for p in generated}
    assert held == {"spot", "um_futures", "cm_futures"}
    ours = copy_fixture(tmp_path)
    report = compare_dirs(LEGACY, ours, interval=interval)
    assert sorted(report.problems) == sorted(
        [f"neither dir holds results_data/{t}/klines/{interval} (legacy holds 1m, ours 1m)"
         for t in held]
        + ["no files compared: neither dir holds a file of trade types spot, um_futures, "
           f"cm_futures at interval {interval}"]
    )  # fmt: skip
    assert report.pairs == []
    assert report.exit_code() == 1
    assert cli_main(["compare", str(LEGACY), str(ours), "--interval", interval]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "OK:" not in out


def test_resampled_files_are_compared_at_the_interval_they_were_made_from(tmp_path):
    """The fixture's spot resampled files were made from its 1m BTCUSDT segments; a dir
    pair that also holds 5m klines of ETHUSDT compares them at --interval 1m only."""
    spot = "results_data/spot"
    made_from_1m = sorted(
        p.relative_to(LEGACY).as_posix() for p in (LEGACY / spot).glob("resampled_klines/*/*/*")
    )
    assert made_from_1m and {Path(r).name for r in made_from_1m} == {
        p.name for p in (LEGACY / spot / "klines/1m").iterdir()
    }
    eth_5m = f"{spot}/klines/5m/ETHUSDT.pqt"
    for side in ("legacy", "ours"):
        shutil.copytree(LEGACY / spot, tmp_path / side / spot)
        (tmp_path / side / eth_5m).parent.mkdir()
        table = pq.read_table(LEGACY / SPOT_1M)
        pq.write_table(table.take(pa.array(np.arange(0, 50, 5))), tmp_path / side / eth_5m)
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"

    at_5m = compare_dirs(legacy, ours, interval="5m", trade_types=["spot"])
    assert [(p.file, p.kind, p.status) for p in at_5m.pairs] == [(eth_5m, "klines", "equal")]
    assert at_5m.problems == [] and at_5m.exit_code() == 0
    at_1m = compare_dirs(legacy, ours, interval="1m", trade_types=["spot"])
    files = {p.kind: [] for p in at_1m.pairs}
    for p in at_1m.pairs:
        files[p.kind].append(p.file)
    assert sorted(files["resampled_klines"]) == made_from_1m
    assert eth_5m not in files["klines"] and all(p.status == "equal" for p in at_1m.pairs)


def test_a_comparison_of_no_file_never_passes(tmp_path, capsys):
    # two BHDS dirs holding spot only, compared on um_futures: no interval, no symbol asked
    # for, nothing to compare
    for side in ("legacy", "ours"):
        (tmp_path / side / "results_data/spot/klines/1m").mkdir(parents=True)
        shutil.copy(LEGACY / SPOT_1M, tmp_path / side / SPOT_1M)
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    assert compare_dirs(legacy, ours, trade_types=["spot"]).exit_code() == 0
    report = compare_dirs(legacy, ours, trade_types=["um_futures"])
    assert report.pairs == [] and len(report.problems) == 1
    assert report.problems[0].startswith("no files compared")
    assert cli_main(["compare", str(legacy), str(ours), "--trade-types", "um_futures"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_formats_carry_the_same_content_and_jobs_give_the_same_result(tmp_path):
    ours = copy_fixture(tmp_path)
    (ours / UM_1M).unlink()
    one = compare_dirs(LEGACY, ours, jobs=1)
    two = compare_dirs(LEGACY, ours, jobs=2)
    assert [p.to_dict() for p in one.pairs] == [p.to_dict() for p in two.pairs]
    data = json.loads(render(one, "json"))
    assert data["exit_code"] == 1 and [d["file"] for d in data["unexplained"]] == [UM_1M]
    for fmt in ("text", "markdown"):
        assert UM_1M in render(one, fmt)
    out = tmp_path / "report.md"
    assert (
        cli_main(
            [
                "compare",
                str(LEGACY),
                str(ours),
                "--format",
                "markdown",
                "--output",
                str(out),
                "--jobs",
                "2",
            ]
        )
        == 1
    )
    assert "## Unexplained (1)" in out.read_text()


def test_filters_and_tolerance_options(tmp_path):
    ours = copy_fixture(tmp_path)
    close = pq.read_table(LEGACY / SPOT_1M).column("close").to_numpy() + 5e-3
    _rewrite(
        ours / SPOT_1M,
        lambda t: t.set_column(t.schema.get_field_index("close"), "close", pa.array(close)),
    )
    assert compare_dirs(LEGACY, ours).exit_code() == 1
    assert compare_dirs(LEGACY, ours, options=Options(price_tolerance=1e-2)).exit_code() == 0
    report = compare_dirs(LEGACY, ours, trade_types=["um_futures"])
    assert {p.trade_type for p in report.pairs} == {"um_futures"} and report.exit_code() == 0
    report = compare_dirs(LEGACY, ours, symbols=["BTCUSD_PERP"])
    assert {p.symbol for p in report.pairs} == {"BTCUSD_PERP"}


def test_a_requested_symbol_without_files_is_a_problem(tmp_path, capsys):
    ours = copy_fixture(tmp_path)
    code = cli_main(
        ["compare", str(LEGACY), str(ours), "--trade-types", "um_futures", "--symbols", "NOPE"]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "symbol NOPE: no files in either dir" in captured.err
    assert "FAILED" in captured.out and "OK:" not in captured.out
    # beside a symbol that has files: those are compared, the other one is named
    um_btc = [
        p for p in (LEGACY / "results_data/um_futures").rglob("*.pqt") if p.stem == "BTCUSDT"
    ] + list((LEGACY / "parsed_data/um_futures/klines/BTCUSDT").rglob("*.pqt"))
    report = compare_dirs(LEGACY, ours, trade_types=["um_futures"], symbols=["BTCUSDT", "NOPE"])
    assert len(report.pairs) == len(um_btc) and {p.symbol for p in report.pairs} == {"BTCUSDT"}
    assert [p.split(":")[0] for p in report.problems] == ["symbol NOPE"]
    assert report.exit_code() == 1
    # a lower-case name: no file is named so; the problem says what to type
    report = compare_dirs(LEGACY, ours, symbols=["btcusdt"])
    assert report.pairs == []
    assert any(
        p.startswith("symbol btcusdt: no files") and "did you mean BTCUSDT?" in p
        for p in report.problems
    )


# ---------------------------------------------------------------- data built per explained class
KLINE_COLS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_num",
    "taker_buy_base_asset_volume",
    "taker_buy_quote_asset_volume",
)


def klines(times, price=100.0, volume=1.0, **extra) -> pa.Table:
    t = np.asarray(times, dtype=np.int64)
    n = len(t)
    price = np.broadcast_to(np.asarray(price, dtype=float), (n,))
    vol = np.broadcast_to(np.asarray(volume, dtype=float), (n,)).copy()
    cols = {
        "candle_begin_time": pa.array(t).cast(TIME_TYPE),
        "open": price,
        "high": price + 1,
        "low": price - 1,
        "close": price,
        "volume": vol,
        "quote_volume": vol * price,
        "trade_num": (vol > 0).astype(np.int64),
        "taker_buy_base_asset_volume": vol / 2,
        "taker_buy_quote_asset_volume": vol * price / 2,
    }
    cols.update(extra)
    return pa.table(cols)


def write(root: Path, rel: str, table: pa.Table) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def minutes(first_day: int, days: int = 1) -> np.ndarray:
    return D0 + first_day * DAY + np.arange(days * 1440, dtype=np.int64) * MIN


def provenance(root: Path, trade_type: str, symbol: str, sources: dict[int, str]) -> None:
    days = sorted(sources)
    n = len(days)
    table = pa.table(
        {
            "day": pa.array([(D0 // DAY) + d for d in days], pa.int32()).cast(pa.date32()),
            "archive_rows": [1440 if sources[d] == "archive" else 0 for d in days],
            "rest_rows": [1440 if sources[d] == "rest" else 0 for d in days],
            "rows": [1440] * n,
            "expected_rows": [1440] * n,
            "rest_fetched": [sources[d] == "rest" for d in days],
            "complete": [True] * n,
            "source": [sources[d] for d in days],
        },
        schema=PROVENANCE_SCHEMA,
    )
    write(root, f"lakehouse/provenance/{trade_type}/1m/{symbol}.pqt", table)


def parsed(root: Path, trade_type: str, symbol: str, days) -> None:
    t = np.concatenate([minutes(d) for d in days])
    write(root, f"parsed_data/{trade_type}/klines/{symbol}/1m/202311.pqt", klines(t))


def test_q9_recent_tail_from_rest(tmp_path):
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    for root in (legacy, ours):
        parsed(root, "spot", "BTCUSDT", [0, 1])
    write(legacy, SPOT_1M, klines(minutes(0, 2)))
    write(ours, SPOT_1M, klines(minutes(0, 3)))  # + day 2 from REST
    provenance(ours, "spot", "BTCUSDT", {0: "archive", 1: "archive", 2: "rest"})
    report = compare_dirs(legacy, ours)
    d = only(report, kind="rows_only")
    assert (d.status, d.fix, d.side, d.count) == ("explained", "Q9", "ours", 1440)
    assert d.ranges == [[iso(D0 + 2 * DAY), iso(D0 + 3 * DAY - MIN), 1440]]
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1
    # control: the same rows recorded as archive rows are not legacy's missing tail
    provenance(ours, "spot", "BTCUSDT", {0: "archive", 1: "archive", 2: "archive"})
    assert only(compare_dirs(legacy, ours), kind="rows_only").status == "unexplained"


def test_q1_rest_days_legacy_lost_inside_its_range(tmp_path):
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    for root in (legacy, ours):
        parsed(root, "spot", "BTCUSDT", [0, 4])
    folder = "results_data/spot/klines/1m"
    write(legacy, f"{folder}/SP0_BTCUSDT.pqt", klines(minutes(0), price=100.0))
    write(legacy, f"{folder}/BTCUSDT.pqt", klines(minutes(4), price=100.0))
    write(ours, f"{folder}/BTCUSDT.pqt", klines(minutes(0, 5), price=100.0))
    provenance(
        ours, "spot", "BTCUSDT", {0: "archive", 1: "rest", 2: "rest", 3: "rest", 4: "archive"}
    )
    report = compare_dirs(legacy, ours)
    d = only(report, kind="rows_only")
    assert (d.status, d.fix, d.count) == ("explained", "Q1", 3 * 1440)
    assert d.first_time == iso(D0 + DAY)
    seg = only(report, kind="segments")
    assert (seg.status, seg.fix) == ("explained", "Q1")
    assert seg.legacy_value == ["BTCUSDT.pqt", "SP0_BTCUSDT.pqt"] and seg.our_value == [
        "BTCUSDT.pqt"
    ]
    # control: legacy did store REST day files for those days, so it did not lose them
    for day in (1, 2, 3):
        stamp = str(np.datetime64(D0 + day * DAY, "ms").astype("datetime64[D]")).replace("-", "")
        write(legacy, f"api_data/spot/klines/BTCUSDT/1m/{stamp}.pqt", klines(minutes(day)))
    report = compare_dirs(legacy, ours)
    assert only(report, kind="rows_only").status == "unexplained"
    assert only(report, kind="segments").status == "unexplained"


def test_q2_overlapping_legacy_segments(tmp_path):
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    folder = "results_data/spot/klines/1m"
    untraded = {"volume": 0.0}
    # ours: three segments split at two gaps (days 1 and 3 untraded)
    write(ours, f"{folder}/SP0_BTCUSDT.pqt", klines(minutes(0)))
    write(ours, f"{folder}/SP1_BTCUSDT.pqt", klines(minutes(2), price=150.0))
    write(ours, f"{folder}/BTCUSDT.pqt", klines(minutes(4), price=250.0))
    # legacy with its gap times out of order: t < g(day 4) and t >= g(day 2), each
    # filled across the gap it did not split at, overlapping on day 2
    seg0 = pa.concat_tables(
        [
            klines(minutes(0)),
            klines(minutes(1), price=100.0, **untraded),
            klines(minutes(2), price=150.0),
        ]
    )
    seg1 = pa.concat_tables(
        [
            klines(minutes(2), price=150.0),
            klines(minutes(3), price=150.0, **untraded),
            klines(minutes(4), price=250.0),
        ]
    )
    seg0 = seg0.set_column(
        5, "volume", pa.array(np.r_[np.ones(1440), np.zeros(1440), np.ones(1440)])
    )
    seg1 = seg1.set_column(
        5, "volume", pa.array(np.r_[np.ones(1440), np.zeros(1440), np.ones(1440)])
    )
    write(legacy, f"{folder}/SP0_BTCUSDT.pqt", seg0)
    write(legacy, f"{folder}/BTCUSDT.pqt", seg1)
    report = compare_dirs(legacy, ours)
    dup = only(report, kind="duplicate_rows")
    assert (dup.status, dup.fix, dup.count, dup.first_time) == (
        "explained",
        "Q2",
        1440,
        iso(D0 + 2 * DAY),
    )
    rows = only(report, kind="rows_only")
    assert (rows.status, rows.fix, rows.side, rows.count) == ("explained", "Q2", "legacy", 2880)
    assert only(report, kind="segments").fix == "Q2"
    assert report.exit_code() == 0
    # control: segments that do not overlap (the filled day 1 stays unexplained)
    write(legacy, f"{folder}/BTCUSDT.pqt", klines(minutes(4), price=250.0))
    write(legacy, f"{folder}/SP1_BTCUSDT.pqt", klines(minutes(3), price=150.0, **untraded))
    report = compare_dirs(legacy, ours)
    assert {d.status for d in report.differences() if d.kind == "rows_only"} == {"unexplained"}


def _cm_pair(contract_size=100.0, n=60):
    """COIN-M minutes: contracts, coins, and both VWAP forms from their definitions."""
    rng = np.random.default_rng(3)
    t = minutes(0)[:n]
    price = 20_000 + rng.normal(0, 5, n)
    contracts = rng.integers(1, 50, n).astype(float)
    coins = contracts * contract_size / price
    contracts[7] = coins[7] = 0.0  # an untraded minute: VWAP is the open
    table = klines(t, price=price, volume=contracts)
    table = table.set_column(6, "quote_volume", pa.array(coins))
    low, high = price - 1, price + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        legacy_vwap = np.clip(np.where(contracts > 0, coins / contracts, price), low, high)
        our_vwap = np.clip(
            np.where(contracts > 0, contracts * contract_size / coins, price), low, high
        )
    return table, legacy_vwap, our_vwap


def test_q3_cm_vwap_in_1m_and_resampled_files(tmp_path):
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    table, legacy_vwap, our_vwap = _cm_pair()
    write(legacy, CM_1M, table.append_column("avg_price_1m", pa.array(legacy_vwap)))
    write(ours, CM_1M, table.append_column("avg_price_1m", pa.array(our_vwap)))
    # 5m windows take the first minute's value
    res = "results_data/cm_futures/resampled_klines/5m/0m/BTCUSD_PERP.pqt"
    firsts = np.arange(0, 60, 5)
    base = klines(table.column("candle_begin_time").cast(pa.int64()).to_numpy()[firsts])
    write(legacy, res, base.append_column("avg_price_1m", pa.array(legacy_vwap[firsts])))
    write(ours, res, base.append_column("avg_price_1m", pa.array(our_vwap[firsts])))
    report = compare_dirs(legacy, ours)
    expected_rows = int((np.abs(legacy_vwap - our_vwap) > 1e-4).sum())
    d = only(report, file=CM_1M, column="avg_price_1m")
    assert (d.status, d.fix, d.count) == ("explained", "Q3", expected_rows)
    r = only(report, file=res, column="avg_price_1m")
    assert (r.status, r.fix, r.count) == (
        "explained",
        "Q3",
        int((np.abs(legacy_vwap - our_vwap)[firsts] > 1e-4).sum()),
    )
    assert report.exit_code() == 0
    # control: a legacy value that is not legacy's formula
    write(legacy, CM_1M, table.append_column("avg_price_1m", pa.array(our_vwap + 0.5)))
    d = only(compare_dirs(legacy, ours), file=CM_1M, column="avg_price_1m")
    assert d.status == "unexplained"


def _funding(root: Path, rel: str, times, rates) -> None:
    t = pa.array(np.asarray(times, dtype=np.int64)).cast(TIME_TYPE)
    cols = {"funding_time": t, "candle_begin_time": t, "funding_rate": pa.array(rates)}
    if "parsed_data" in rel:
        cols = {
            "funding_time": t,
            "funding_interval_hours": pa.array([8] * len(rates)),
            "funding_rate": pa.array(rates),
            "candle_begin_time": t,
        }
    write(root, rel, pa.table(cols))


def test_q4_funding_at_an_untraded_minute(tmp_path):
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    t = minutes(0)[:180]
    vol = np.ones(180)
    vol[60] = 0.0  # 01:00 untraded: legacy's join on traded candles loses that event
    events = t[[0, 60, 120]]
    rates = [1e-4, 2e-4, 3e-4]
    for root in (legacy, ours):
        _funding(root, UM_FUNDING, events, rates)
    ours_rate = np.zeros(180)
    ours_rate[[0, 60, 120]] = rates
    legacy_rate = ours_rate.copy()
    legacy_rate[60] = 0.0
    write(legacy, UM_1M, klines(t, volume=vol, funding_rate=legacy_rate))
    write(ours, UM_1M, klines(t, volume=vol, funding_rate=ours_rate))
    d = only(compare_dirs(legacy, ours), column="funding_rate")
    assert (d.status, d.fix, d.count, d.first_time) == ("explained", "Q4", 1, iso(t[60]))
    assert (d.legacy_value, d.our_value) == (0.0, 2e-4)
    # control: at a traded minute legacy would have kept the event
    vol[60] = 1.0
    write(legacy, UM_1M, klines(t, volume=vol, funding_rate=legacy_rate))
    write(ours, UM_1M, klines(t, volume=vol, funding_rate=ours_rate))
    assert only(compare_dirs(legacy, ours), column="funding_rate").status == "unexplained"


def test_q5_rest_funding_without_an_archived_month(tmp_path):
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    t = minutes(0)[:120]
    rate = np.zeros(120)
    rate[60] = 1e-4
    write(legacy, UM_1M, klines(t))
    write(ours, UM_1M, klines(t, funding_rate=rate))
    _funding(ours, UM_API_FUNDING, [t[60]], [1e-4])
    report = compare_dirs(legacy, ours)
    d = only(report, kind="column_only")
    assert (d.status, d.fix, d.column, d.side) == ("explained", "Q5", "funding_rate", "ours")
    # control: legacy had archive funding, so it would have had the column
    _funding(legacy, UM_FUNDING, [t[60]], [1e-4])
    assert only(compare_dirs(legacy, ours), kind="column_only").status == "unexplained"


def test_q13_repeated_funding_rows_in_legacy(tmp_path):
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    times = D0 + np.arange(4, dtype=np.int64) * 8 * 3_600_000
    _funding(legacy, UM_FUNDING, np.r_[times, times[2]], [1e-4, 2e-4, 3e-4, 4e-4, 3e-4])
    _funding(ours, UM_FUNDING, times, [1e-4, 2e-4, 3e-4, 4e-4])
    d = only(compare_dirs(legacy, ours), kind="duplicate_rows")
    assert (d.status, d.fix, d.side, d.count, d.first_time) == (
        "explained",
        "Q13",
        "legacy",
        1,
        iso(times[2]),
    )
    # control: ours repeating the row as well is not the documented fix
    _funding(ours, UM_FUNDING, np.r_[times, times[2]], [1e-4, 2e-4, 3e-4, 4e-4, 3e-4])
    report = compare_dirs(legacy, ours)
    assert {d.status for d in report.differences()} == {"unexplained"}


def _listing(root: Path, trade_type: str, symbols, filtered_out=()) -> None:
    path = root / f"lakehouse/listing/{trade_type}/klines-1m.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"symbols": {s: {} for s in symbols}, "filtered_out": list(filtered_out)})
    )


def _only_ours_has_syrupusdt(tmp_path) -> tuple[Path, Path, str]:
    """Both dirs hold BTCUSDT, parsed and generated; ours also a generated SYRUPUSDT (the
    file of the returned relative path) that legacy never parsed."""
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    write(legacy, SPOT_1M, klines(minutes(0)[:10]))
    for root in (legacy, ours):
        parsed(root, "spot", "BTCUSDT", [0])
    write(ours, SPOT_1M, klines(minutes(0)[:10]))
    rel = "results_data/spot/klines/1m/SYRUPUSDT.pqt"
    write(ours, rel, klines(minutes(0)[:10]))
    return legacy, ours, rel


def test_q15_symbol_the_legacy_filter_dropped(tmp_path):
    legacy, ours, rel = _only_ours_has_syrupusdt(tmp_path)
    _listing(ours, "spot", ["BTCUSDT", "SYRUPUSDT"])
    d = only(compare_dirs(legacy, ours), file=rel)
    assert (d.status, d.fix, d.kind, d.side) == ("explained", "Q15", "file_only", "ours")
    # control: legacy parsed the symbol, so its filter did not drop it
    parsed(legacy, "spot", "SYRUPUSDT", [0])
    assert only(compare_dirs(legacy, ours), file=rel).status == "unexplained"


def test_q15_with_our_listing_in_a_configured_run_dir(tmp_path, capsys):
    """An s3:// data dir keeps its listing indexes in a local run directory, and a
    configured run_dir anywhere: compare looked only in the default one of NEW_DIR (relative
    to the current directory for a bucket), so Q15/Q17 went unexplained. ``--run-dir``
    (Options.run_dir) names it."""
    from crypto_lakehouse.cli import main
    from crypto_lakehouse.compare import Options

    legacy, ours, rel = _only_ours_has_syrupusdt(tmp_path)
    runs = tmp_path / "runs"
    _listing(runs, "spot", ["BTCUSDT", "SYRUPUSDT"])  # runs/lakehouse/listing/spot/…
    run_dir = runs / "lakehouse"
    assert only(compare_dirs(legacy, ours), file=rel).status == "unexplained"
    d = only(compare_dirs(legacy, ours, options=Options(run_dir=str(run_dir))), file=rel)
    assert (d.status, d.fix) == ("explained", "Q15")
    assert main(["compare", str(legacy), str(ours), "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(legacy), str(ours), "--run-dir", str(tmp_path / "nope")])
    assert exit_.value.code == 2
    assert "--run-dir" in capsys.readouterr().err


def test_q17_cm_market_legacy_lost_to_a_two_underscore_name(tmp_path):
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    write(legacy, SPOT_1M, klines(minutes(0)[:10]))
    write(ours, SPOT_1M, klines(minutes(0)[:10]))
    write(ours, CM_1M, klines(minutes(0)[:10]))
    _listing(ours, "cm_futures", ["BTCUSD_PERP"], [{"name": "A_B_PERP", "reason": "x"}])
    d = only(compare_dirs(legacy, ours), file=CM_1M)
    assert (d.status, d.fix) == ("explained", "Q17")
    _listing(ours, "cm_futures", ["BTCUSD_PERP"], [{"name": "ETHUSD_240329", "reason": "x"}])
    assert only(compare_dirs(legacy, ours), file=CM_1M).status == "unexplained"


# ---------------------------------------------------------------- the registry
def test_one_explanation_entry_per_documented_section():
    text = (REPO_ROOT / "docs" / "differences-from-bhds.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    sections = [h for h in headings if h != "What users will notice first"]
    titles = {f.title for f in FIXES.values()}
    for heading in sections:
        m = re.match(r"(Q\d+) (.+?)(?: \([^()]*\))?$", heading)
        title = m.group(2) if m else heading
        kept = heading.endswith("(kept)")
        assert (title + (" (kept)" if kept else "")) in titles or title in titles, heading
    assert len(FIXES) == len(sections)


def test_q4_in_resampled_files_follows_the_1m_minute(tmp_path):
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    t = minutes(0)[:180]
    vol = np.ones(180)
    vol[60] = 0.0
    rates = np.zeros(180)
    rates[60] = 2e-4
    for root in (legacy, ours):
        _funding(root, UM_FUNDING, [t[60]], [2e-4])
    write(legacy, UM_1M, klines(t, volume=vol, funding_rate=np.zeros(180)))
    write(ours, UM_1M, klines(t, volume=vol, funding_rate=rates))
    # 1h windows: the funding columns of the window holding 01:00 (spec §9: first non-zero
    # funding of the window, the open of that minute, its time); null without funding
    res = "results_data/um_futures/resampled_klines/1h/0m/BTCUSDT.pqt"
    starts = t[::60]
    hour = klines(starts)
    null = pa.nulls(3, pa.float64())
    write(
        legacy,
        res,
        hour.append_column("funding_rate", null)
        .append_column("funding_price", null)
        .append_column("funding_time", pa.nulls(3, TIME_TYPE)),
    )
    ftime = pa.array([None, int(t[60]), None], pa.int64()).cast(TIME_TYPE)
    write(
        ours,
        res,
        hour.append_column("funding_rate", pa.array([None, 2e-4, None]))
        .append_column("funding_price", pa.array([None, 100.0, None]))
        .append_column("funding_time", ftime),
    )
    report = compare_dirs(legacy, ours)
    for column in ("funding_rate", "funding_price", "funding_time"):
        d = only(report, file=res, column=column)
        assert (d.status, d.fix, d.count, d.first_time) == ("explained", "Q4", 1, iso(t[60]))
    # control: the funding minute was traded, so legacy's join would have kept it
    vol[60] = 1.0
    write(legacy, UM_1M, klines(t, volume=vol, funding_rate=np.zeros(180)))
    write(ours, UM_1M, klines(t, volume=vol, funding_rate=rates))
    report = compare_dirs(legacy, ours)
    assert only(report, file=res, column="funding_rate").status == "unexplained"


def test_q8_day_of_an_archive_legacy_holds_in_an_older_version(tmp_path):
    import hashlib

    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    t = minutes(0, 2)
    close = np.full(len(t), 100.0)
    fixed = close.copy()
    fixed[1440 + 5] = 101.0  # day 1, as re-published
    rel = "parsed_data/spot/klines/BTCUSDT/1m/202311.pqt"
    write(legacy, rel, klines(t).set_column(4, "close", pa.array(close)))
    write(ours, rel, klines(t).set_column(4, "close", pa.array(fixed)))
    day1 = str(np.datetime64(int(D0 + DAY), "ms").astype("datetime64[D]"))
    key = f"data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-{day1}.zip"
    (legacy / "aws_data" / key).parent.mkdir(parents=True)
    (legacy / "aws_data" / key).write_bytes(b"the first upload")
    state = ours / "lakehouse/state/aws_parse/spot/klines-1m/BTCUSDT.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"files": {key: hashlib.sha256(b"the re-upload").hexdigest()}}))
    d = only(compare_dirs(legacy, ours), column="close")
    assert (d.status, d.fix, d.count, d.first_time) == ("explained", "Q8", 1, iso(t[1445]))
    # control: we parsed the very archive legacy holds, so the change is not a re-upload
    state.write_text(json.dumps({"files": {key: hashlib.sha256(b"the first upload").hexdigest()}}))
    assert only(compare_dirs(legacy, ours), column="close").status == "unexplained"


# ---------------------------------------------------------------- files of other writers
def _times_in(unit: str):
    """A table rewrite casting every time column to ``unit`` (same instants)."""

    def fn(t: pa.Table) -> pa.Table:
        cols = [
            c.cast(pa.timestamp(unit, tz=f.type.tz)) if pa.types.is_timestamp(f.type) else c
            for f, c in zip(t.schema, t.columns, strict=True)
        ]
        return pa.table(cols, names=t.column_names)

    return fn


@pytest.mark.parametrize("unit", ["us", "ns"])
def test_legacy_files_storing_times_in_another_unit_compare_by_instant(tmp_path, unit):
    """A legacy file whose times are µs or ns (another writer than V1's polars, which
    writes ms) holds the same instants: only its column type differs. Before 2026-12-06 the
    raw integers were compared: no key matched, the 1m candles were "60000 s apart", and the
    comparison failed on a date "out of range"."""
    legacy = copy_fixture(tmp_path)
    _rewrite(legacy / SPOT_1M, _times_in(unit))
    times = np.array([D0 + 8 * 3_600_000, D0 + 16 * 3_600_000], dtype=np.int64)
    jitter = times + 7  # funding_time carries Binance's ms jitter; the key is funding_time
    rates = [0.0001, -0.0002]
    _funding(legacy, UM_FUNDING, jitter, rates)
    _rewrite(legacy / UM_FUNDING, _times_in(unit))
    ours = copy_fixture(tmp_path / "o")
    _funding(ours, UM_FUNDING, jitter, rates)
    report = compare_dirs(legacy, ours)
    found = sorted((d.file, d.kind, d.column) for d in unexplained(report))
    assert found == [
        (UM_FUNDING, "column_type", "candle_begin_time"),
        (UM_FUNDING, "column_type", "funding_time"),
        (SPOT_1M, "column_type", "candle_begin_time"),
    ]
    for rel, n in ((SPOT_1M, pq.read_metadata(LEGACY / SPOT_1M).num_rows), (UM_FUNDING, 2)):
        pair = next(p for p in report.pairs if p.file == rel)
        assert pair.common_rows == pair.legacy_rows == pair.our_rows == n
        assert all(c["status"] == "equal" for c in pair.columns.values()), pair.columns


# ---------------------------------------------------------------- memory
_PEAK_SCRIPT = """
import sys
import pyarrow as pa
from crypto_lakehouse.compare import compare_dirs
report = compare_dirs(sys.argv[1], sys.argv[2])
assert report.exit_code() == 0 and len(report.pairs) == 1, report.differences()
print(pa.default_memory_pool().max_memory())
"""


def test_a_large_pair_without_differences_holds_one_column_of_each_side(tmp_path):
    """docs/compare.md: a file above 200,000 rows is read column by column, memory holding
    the keys plus one column of each side. Before 2026-12-06 five columns of each side were
    kept for the explainers even when nothing differed: Arrow's peak was ~120 bytes a row
    (the 11 columns of a generated file), now ~56 (measured on 3 million rows); the bound
    here, 90, is the keys (2 × 8) and one column pair (2 × 8) with room for the reader's
    buffers, below the old figure."""
    import subprocess
    import sys

    rows = 1_000_000
    t = pa.array(D0 + np.arange(rows, dtype=np.int64) * MIN).cast(TIME_TYPE)
    price = np.linspace(100.0, 200.0, rows)
    table = klines(np.zeros(0))  # the column names and types of a generated file
    cols = {f.name: price for f in table.schema if f.name != "candle_begin_time"}
    cols["trade_num"] = np.arange(rows, dtype=np.int64)
    data = pa.table({"candle_begin_time": t, **cols}).cast(
        pa.schema([table.schema.field(n) for n in ["candle_begin_time", *cols]])
    )
    for side in ("legacy", "ours"):
        write(tmp_path / side, UM_1M, data)
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(tmp_path / "legacy"), str(tmp_path / "ours")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    peak = int(out.stdout.split()[-1])
    assert peak < 90 * rows, f"{peak / rows:.0f} bytes a row"


# ---------------------------------------------------------------- folders that cannot be listed
def test_an_unreadable_symbol_folder_is_named_and_the_rest_still_compared(tmp_path, monkeypatch):
    """A legacy symbol folder without read permission (simulated: the tests may run as root,
    whom permissions do not stop) is a problem naming it; every other file is compared.
    Before 2026-12-06 the listing error stopped discovery: "cannot list the files to
    compare", no file compared at all."""
    import errno

    from crypto_lakehouse import storage

    legacy = copy_fixture(tmp_path)
    locked = legacy / "parsed_data/spot/klines/BTCUSDT"
    real_list_files = storage.list_files

    def list_files(directory, **kw):
        d = Path(directory)
        if d == locked or (kw.get("recursive", True) and locked.is_relative_to(d)):
            raise PermissionError(errno.EACCES, "Permission denied", str(locked))
        return real_list_files(directory, **kw)

    monkeypatch.setattr(storage, "list_files", list_files)
    report = compare_dirs(legacy, LEGACY)
    assert len(report.problems) == 1, report.problems
    assert str(locked) in report.problems[0] and "cannot be listed" in report.problems[0]
    spot_parsed = {
        p.file for p in report.pairs if p.kind == "parsed_klines" and p.trade_type == "spot"
    }
    assert spot_parsed == {
        f"parsed_data/spot/klines/BTCUSDT/1m/{m}.pqt" for m in ("202001", "202412", "202501")
    }
    assert all(d.kind == "file_only" and d.side == "ours" for d in unexplained(report))
    others = [p for p in report.pairs if p.file not in spot_parsed]
    assert len(others) > 50 and all(p.status == "equal" for p in others)
    assert report.exit_code() == 1


def test_a_bhds_v2_dir_of_parquet_files_is_named(tmp_path, capsys):
    """BHDS V2 (2025-08) writes `.parquet` files, which compare does not read: the problem
    says so, instead of only listing every file of the other dir as one-sided."""
    legacy = copy_fixture(tmp_path)
    for f in list(legacy.rglob("*.pqt")):
        f.rename(f.with_suffix(".parquet"))
    report = compare_dirs(legacy, LEGACY)
    problems = [p for p in report.problems if ".parquet" in p]
    assert len(problems) == 1 and "BHDS V2" in problems[0] and "LEGACY_DIR" in problems[0]
    assert cli_main(["compare", str(legacy), str(LEGACY)]) == 1
    assert "BHDS V2" in capsys.readouterr().err
    # control: a V1 dir holding the same files as .pqt has no such problem
    assert compare_dirs(LEGACY, LEGACY).problems == []


def test_a_symbolic_link_to_nothing_is_named_not_passed_over(tmp_path):
    """A legacy file or symbol folder linked to a target that does not exist (a volume not
    mounted): listings leave such links out, and before 2026-12-06 its files vanished from
    the comparison without a word (exit 0 when the other dir had none either). Links that
    resolve are followed like files and folders."""
    legacy, ours = copy_fixture(tmp_path / "l"), copy_fixture(tmp_path / "o")
    gone = tmp_path / "unmounted"
    klines_dir = legacy / "results_data/spot/klines/1m"
    (klines_dir / "ETHUSDT.pqt").symlink_to(gone / "ETHUSDT.pqt")
    (legacy / "parsed_data/spot/klines/XRPUSDT").symlink_to(gone / "XRPUSDT")
    moved = tmp_path / "moved_um"
    shutil.move(legacy / "parsed_data/um_futures", moved)
    (legacy / "parsed_data/um_futures").symlink_to(moved)  # resolves: compared as usual
    report = compare_dirs(legacy, ours)
    assert sorted(report.problems) == sorted(
        [
            f"{klines_dir / 'ETHUSDT.pqt'}: a symbolic link to {gone / 'ETHUSDT.pqt'}, which "
            "does not exist: not compared",
            f"{legacy / 'parsed_data/spot/klines/XRPUSDT'}: a symbolic link to "
            f"{gone / 'XRPUSDT'}, which does not exist: not compared",
        ]
    )
    assert unexplained(report) == [] and report.exit_code() == 1
    assert "parsed_data/um_futures/klines/BTCUSDT/1m/202209.pqt" in {p.file for p in report.pairs}


def test_the_json_report_is_strict_json_when_a_value_is_infinite(tmp_path):
    """A legacy close of +inf against ours: the difference is infinite. JSON has no
    infinity: the report writes it as the string "inf" (before 2026-12-06 Python's
    `Infinity` token, which strict parsers such as jq refuse)."""
    legacy = copy_fixture(tmp_path)
    close = pq.read_table(LEGACY / SPOT_1M).column("close").to_numpy().copy()
    close[3] = np.inf
    _rewrite(
        legacy / SPOT_1M,
        lambda t: t.set_column(t.schema.get_field_index("close"), "close", pa.array(close)),
    )
    out = tmp_path / "report.json"
    assert cli_main(["compare", str(legacy), str(LEGACY), "--format", "json", "-o", str(out)]) == 1

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    report = json.loads(out.read_text(), parse_constant=refuse)
    (d,) = report["unexplained"]
    assert (d["file"], d["column"], d["count"], d["max_abs"]) == (SPOT_1M, "close", 1, "inf")
    assert d["legacy_value"] == "inf"


def test_a_file_whose_rows_are_not_in_time_order_is_a_difference(tmp_path):
    """Rows are matched by key, so a legacy file holding the same rows in another order
    compared as equal before 2026-12-06; legacy and we write every file in ascending time
    order, and code that takes the last row as the latest relies on it."""
    legacy = copy_fixture(tmp_path)
    rel = "parsed_data/cm_futures/klines/BTCUSD_PERP/1m/202210.pqt"
    n = pq.read_metadata(LEGACY / rel).num_rows
    order = np.arange(n)
    order[[100, 101]] = [101, 100]  # two minutes swapped
    _rewrite(legacy / rel, lambda t: t.take(pa.array(order)))
    report = compare_dirs(legacy, LEGACY)
    d = only(report, status="unexplained")
    times = pq.read_table(LEGACY / rel).column("candle_begin_time").cast(pa.int64()).to_numpy()
    assert (d.file, d.kind, d.side, d.count) == (rel, "row_order", "legacy", 1)
    assert d.first_time == iso(times[100]) and str(legacy / rel) in d.note
    assert all(
        c["status"] == "equal"
        for c in next(p for p in report.pairs if p.file == rel).columns.values()
    )


def test_a_file_without_its_key_column_says_so_not_that_it_cannot_be_read(tmp_path):
    legacy = copy_fixture(tmp_path)
    rel = "results_data/um_futures/resampled_klines/1h/0m/BTCUSDT.pqt"
    _rewrite(legacy / rel, lambda t: t.drop_columns(["candle_begin_time"]))
    d = only(compare_dirs(legacy, LEGACY), status="unexplained")
    assert (d.file, d.kind, d.side) == (rel, "unreadable", "legacy")
    assert d.note.startswith(f"{legacy / rel}: no candle_begin_time column (columns: ['open',")
    assert "cannot read" not in d.note  # before 2026-12-06: "cannot read Parquet (KeyError…"


def test_a_link_to_nothing_of_a_symbol_left_out_by_symbols_is_no_problem(tmp_path):
    """`--symbols BTCUSDT` compares BTCUSDT alone: another symbol's broken link does not
    fail it; the requested symbol's own broken link still does."""
    legacy = copy_fixture(tmp_path)
    gone = tmp_path / "unmounted"
    xrp = legacy / "results_data/spot/klines/1m/SP0_XRPUSDT.pqt"
    xrp.symlink_to(gone / "SP0_XRPUSDT.pqt")
    eth = legacy / "parsed_data/spot/klines/ETHUSDT"
    eth.symlink_to(gone / "ETHUSDT")
    assert len(compare_dirs(legacy, LEGACY).problems) == 2
    report = compare_dirs(legacy, LEGACY, symbols=["BTCUSDT"])
    assert report.problems == [] and report.exit_code() == 0
    assert {p.symbol for p in report.pairs} == {"BTCUSDT"}
    problems = compare_dirs(legacy, LEGACY, symbols=["XRPUSDT"]).problems
    assert problems[0].startswith(f"{xrp}: a symbolic link to ")
    assert compare_dirs(legacy, LEGACY, symbols=["ETHUSDT"]).problems[0].startswith(f"{eth}: ")


# ---------------------------------------------------------------- candles off the interval grid
def _off_grid_dirs(tmp_path, legacy_offset_ms: int):
    """Legacy's parse kept three candles opening ``legacy_offset_ms`` after their minute
    (Binance's spot files of 2018-02-08: ``…:14.789``) and its grid join left those minutes
    as zero-volume fills at the previous close; our parse floors them onto their minutes."""
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    t = minutes(0)[:180]
    hit = np.arange(60, 63)
    price = np.full(len(t), 100.0)
    price[hit] = [105.0, 106.0, 107.0]
    rel = "parsed_data/spot/klines/BTCUSDT/1m/202311.pqt"
    legacy_t = t.copy()
    legacy_t[hit] += legacy_offset_ms
    write(legacy, rel, klines(legacy_t, price=price))
    write(ours, rel, klines(t, price=price))
    filled_vol = np.ones(len(t))
    filled_vol[hit] = 0.0
    write(legacy, SPOT_1M, klines(t, price=np.where(np.isin(np.arange(180), hit), 100.0, price),
                                  volume=filled_vol))  # fmt: skip
    write(ours, SPOT_1M, klines(t, price=price))
    # the 1h windows: the second one holds the three minutes (its volume differs by 3)
    res = "results_data/spot/resampled_klines/1h/0m/BTCUSDT.pqt"
    write(legacy, res, klines(t[::60], volume=[60.0, 57.0, 60.0]))
    write(ours, res, klines(t[::60], volume=60.0))
    return legacy, ours, t, rel


def test_candles_legacy_parsed_off_the_grid_are_explained(tmp_path):
    legacy, ours, t, rel = _off_grid_dirs(tmp_path, 14_789)
    report = compare_dirs(legacy, ours)
    d = only(report, file=SPOT_1M, column="close")
    assert (d.status, d.fix, d.count, d.first_time) == ("explained", "off-grid", 3, iso(t[60]))
    assert only(report, file=SPOT_1M, column="volume").fix == "off-grid"
    res = "results_data/spot/resampled_klines/1h/0m/BTCUSDT.pqt"
    d = only(report, file=res, column="volume")
    assert (d.status, d.fix, d.count, d.first_time) == ("explained", "off-grid", 1, iso(t[60]))
    parsed = [d for d in report.differences() if d.file == rel]
    assert {(d.kind, d.side, d.status, d.fix, d.count) for d in parsed} == {
        ("rows_only", "legacy", "explained", "off-grid", 3),
        ("rows_only", "ours", "explained", "off-grid", 3),
    }
    assert report.exit_code() == 0
    # control: our parsed file lacks the floored candles, legacy's off-grid rows stay unexplained
    write(ours, rel, klines(np.delete(t, [60, 61, 62])))
    d = only(compare_dirs(legacy, ours), file=rel, kind="rows_only")
    assert (d.side, d.status, d.count) == ("legacy", "unexplained", 3)


def test_candles_legacy_parsed_on_the_grid_are_not_explained_as_off_grid(tmp_path):
    legacy, ours, t, rel = _off_grid_dirs(tmp_path, 0)  # control: nothing was floored
    report = compare_dirs(legacy, ours)
    d = only(report, file=SPOT_1M, column="close")
    assert (d.status, d.fix) == ("unexplained", None)
    res = "results_data/spot/resampled_klines/1h/0m/BTCUSDT.pqt"
    assert only(report, file=res, column="volume").status == "unexplained"


def test_candles_sharing_a_grid_slot_are_still_mismatched_intervals(tmp_path):
    # the interval check spaces grid slots (off-grid candles are no other interval), so a
    # 1m path holding 30 s candles, whose pairs share a slot, must still be found
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    rel = "parsed_data/spot/klines/BTCUSDT/1m/202311.pqt"
    write(legacy, rel, klines(minutes(0)[:60]))
    write(ours, rel, klines(D0 + np.arange(120, dtype=np.int64) * 30_000))
    d = only(compare_dirs(legacy, ours), kind="interval")
    assert d.side == "ours" and "30 s apart, not 1m" in d.note


def test_an_unlistable_legacy_parsed_folder_is_no_off_grid_evidence(tmp_path, monkeypatch):
    from crypto_lakehouse import storage

    legacy, ours, t, rel = _off_grid_dirs(tmp_path, 14_789)
    list_files = storage.list_files
    folder = legacy / "parsed_data/spot/klines/BTCUSDT/1m"

    def failing(directory, **kw):
        if str(directory) == str(folder) and kw.get("recursive") is False:
            raise PermissionError(13, "Permission denied", str(directory))
        return list_files(directory, **kw)

    monkeypatch.setattr(storage, "list_files", failing)
    d = only(compare_dirs(legacy, ours), file=SPOT_1M, column="close")
    assert (d.status, d.fix) == ("unexplained", None)


# ---------------------------------------------------------------- --start / --end
def _legacy_stopped_two_days_earlier(tmp_path) -> tuple[Path, Path]:
    """A legacy dir whose last run ended with day 1 and ours, run three days later (days
    0–4, all from the archive), with a symbol listed since (ETHUSDT, days 3–4 only)."""
    legacy, ours = tmp_path / "legacy", tmp_path / "ours"
    parsed(legacy, "spot", "BTCUSDT", [0, 1])
    parsed(ours, "spot", "BTCUSDT", [0, 1, 2, 3, 4])
    write(legacy, SPOT_1M, klines(minutes(0, 2)))
    write(ours, SPOT_1M, klines(minutes(0, 5)))
    write(ours, "results_data/spot/klines/1m/ETHUSDT.pqt", klines(minutes(3, 2)))
    provenance(ours, "spot", "BTCUSDT", dict.fromkeys(range(5), "archive"))
    return legacy, ours


def test_a_time_window_leaves_out_the_rows_a_legacy_dir_that_stopped_earlier_lacks(tmp_path):
    """Without a window our three newer days (archive rows, not Q9's REST tail) and the
    symbol listed since are unexplained; `--end` at legacy's last day compares the two days
    both hold, and a difference inside them is still found."""
    legacy, ours = _legacy_stopped_two_days_earlier(tmp_path)
    found = unexplained(compare_dirs(legacy, ours))
    assert {(d.file, d.kind) for d in found} == {
        (SPOT_1M, "rows_only"),
        ("parsed_data/spot/klines/BTCUSDT/1m/202311.pqt", "rows_only"),
        ("results_data/spot/klines/1m/ETHUSDT.pqt", "file_only"),
    }
    window = Options(end_ms=D0 + 2 * DAY)  # up to the end of day 1 (2023-11-16)
    report = compare_dirs(legacy, ours, options=window)
    assert unexplained(report) == [] and report.problems == [] and report.exit_code() == 0
    assert sorted(p.file for p in report.pairs) == [
        "parsed_data/spot/klines/BTCUSDT/1m/202311.pqt",
        SPOT_1M,
    ]
    spot = next(p for p in report.pairs if p.file == SPOT_1M)
    assert (spot.legacy_rows, spot.our_rows, spot.common_rows) == (2880, 2880, 2880)
    assert report.settings["end"] == "2023-11-17 00:00:00"
    # A price of ours changed inside the window is found; one outside it is not compared.
    close = np.full(5 * 1440, 100.0)
    close[1440 + 7] += 0.01  # day 1
    close[3 * 1440] += 0.01  # day 3
    write(ours, SPOT_1M, klines(minutes(0, 5), close=close))
    d = only(compare_dirs(legacy, ours, options=window), status="unexplained")
    assert (d.file, d.kind, d.column, d.count) == (SPOT_1M, "values", "close", 1)
    assert d.first_time == iso(D0 + DAY + 7 * MIN)
    # --start too: day 1 alone
    report = compare_dirs(legacy, ours, options=Options(start_ms=D0 + DAY, end_ms=D0 + 2 * DAY))
    spot = next(p for p in report.pairs if p.file == SPOT_1M)
    assert (spot.legacy_rows, spot.our_rows, spot.common_rows) == (1440, 1440, 1440)


def test_a_window_holding_no_row_of_either_dir_never_passes(tmp_path, capsys):
    legacy, ours = _legacy_stopped_two_days_earlier(tmp_path)
    report = compare_dirs(legacy, ours, options=Options(start_ms=D0 + 10 * DAY))
    assert report.pairs == [] and report.exit_code() == 1
    assert report.problems == [
        "no rows compared: no file of either dir holds a row from 2023-11-25 00:00:00 on"
    ]


def test_the_window_options_on_the_command_line(tmp_path, capsys):
    legacy, ours = _legacy_stopped_two_days_earlier(tmp_path)
    assert cli_main(["compare", str(legacy), str(ours)]) == 1
    capsys.readouterr()
    assert cli_main(["compare", str(legacy), str(ours), "--end", "2023-11-16"]) == 0
    out = capsys.readouterr().out
    assert "0 unexplained" in out
    assert "Only rows before 2023-11-17 00:00:00 (UTC) compared (--start/--end)" in out
    argv = ["compare", str(legacy), str(ours), "--start", "2023-11-16", "--format", "markdown"]
    assert cli_main(argv) == 1  # days 2–4 and ETHUSDT are still ours only
    out = capsys.readouterr().out
    assert "Only rows from 2023-11-16 00:00:00 on (UTC) compared" in out
    with pytest.raises(SystemExit) as info:
        cli_main(["compare", str(legacy), str(ours), "--start", "2023-11-31"])
    assert info.value.code == 2
    assert "--start: '2023-11-31' is not a date (YYYY-MM-DD)" in capsys.readouterr().err
    code = cli_main(
        ["compare", str(legacy), str(ours), "--start", "2023-11-17", "--end", "2023-11-16"]
    )
    assert code == 2
    assert "--start 2023-11-17 is after --end 2023-11-16" in capsys.readouterr().err


def test_the_last_day_of_the_calendar_as_the_window_end(tmp_path, capsys):
    """``--end 9999-12-31`` (every row): its window ends at the midnight after it, a date
    Python cannot hold; that ended in an OverflowError traceback. It now compares every
    row, as without the option."""
    legacy, ours = _legacy_stopped_two_days_earlier(tmp_path)
    assert cli_main(["compare", str(legacy), str(ours)]) == 1
    everything = capsys.readouterr().out
    assert cli_main(["compare", str(legacy), str(ours), "--end", "9999-12-31"]) == 1
    assert capsys.readouterr().out == everything
    # The same last day as --start: a window holding no row of either dir.
    assert cli_main(["compare", str(legacy), str(ours), "--start", "9999-12-31"]) == 1
    out = capsys.readouterr().out
    assert "no rows compared: no file of either dir holds a row from 9999-12-31 00:00:00 on" in out
