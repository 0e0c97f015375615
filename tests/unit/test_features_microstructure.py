"""Microstructure features against loops written from their definitions (docs/features.md),
and the no-look-ahead property of every feature column."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse.features.job import feature_table
from crypto_lakehouse.features.microstructure import (
    RELEASED_INPUTS,
    compute_microstructure,
    release_microstructure,
)
from crypto_lakehouse.features.spec import parse_indicators
from crypto_lakehouse.schema import KLINE_SCHEMA, TIME_TYPE

NAN = float("nan")
MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000


def candles(n: int, seed: int = 1, zero_volume=(), zero_trades=()) -> dict[str, np.ndarray]:
    """A random 1m series; ``zero_volume`` candles are gap fills (no trade, price flat at the
    previous close, as gen_kline fills them); ``zero_trades`` have volume but trade_num 0."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    volume = rng.uniform(1, 50, n)
    taker = volume * rng.uniform(0, 1, n)
    trades = rng.integers(1, 40, n).astype(np.int64)
    for i in zero_volume:
        open_[i] = high[i] = low[i] = close[i] = close[i - 1]
        volume[i] = taker[i] = 0.0
        trades[i] = 0
    for i in zero_trades:
        trades[i] = 0
    quote = volume * close
    return {
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
        "quote_volume": quote,
        "trade_num": trades,
        "taker_buy_base_asset_volume": taker,
        "taker_buy_quote_asset_volume": taker * close,
        "avg_price_1m": np.where(volume > 0, quote / np.where(volume > 0, volume, 1), 0.0),
    }


# ------------------------------------------------------------------ references (plain loops)
def div(a: float, b: float) -> float:
    return NAN if b == 0 or math.isnan(a) or math.isnan(b) else a / b


def ln(x: float) -> float:
    return math.log(x) if not math.isnan(x) and x > 0 else NAN


def window(values: list[float], t: int, w: int) -> list[float]:
    return [v for v in values[max(0, t - w + 1) : t + 1] if not math.isnan(v)]


def roll_stat(values: list[float], w: int, stat) -> list[float]:
    out = []
    for t in range(len(values)):
        obs = window(values, t, w)
        out.append(stat(obs) if len(obs) >= w // 2 else NAN)
    return out


def roll_cov(x: list[float], y: list[float], w: int) -> list[float]:
    """Sample covariance (n - 1) of the complete (x, y) pairs in the window."""
    out = []
    for t in range(len(x)):
        pairs = [
            (a, b)
            for a, b in zip(x[max(0, t - w + 1) : t + 1], y[max(0, t - w + 1) : t + 1], strict=True)
            if not (math.isnan(a) or math.isnan(b))
        ]
        if len(pairs) < max(w // 2, 2):
            out.append(NAN)
            continue
        mx = sum(a for a, _ in pairs) / len(pairs)
        my = sum(b for _, b in pairs) / len(pairs)
        out.append(sum((a - mx) * (b - my) for a, b in pairs) / (len(pairs) - 1))
    return out


def mean(obs):
    return sum(obs) / len(obs)


def reference(c: dict[str, np.ndarray], windows: list[int], contract_size=None) -> dict:
    o, h, lo, cl = (list(map(float, c[k])) for k in ("open", "high", "low", "close"))
    v = list(map(float, c["volume"]))
    tb = list(map(float, c["taker_buy_base_asset_volume"]))
    trades = list(map(float, c["trade_num"]))
    vwap = list(map(float, c["avg_price_1m"]))
    n = len(cl)
    notional = [x * contract_size for x in v] if contract_size else list(c["quote_volume"])
    r = [NAN] + [ln(div(cl[t], cl[t - 1])) for t in range(1, n)]
    q = [2 * tb[t] - v[t] for t in range(n)]
    out = {
        "log_return": r,
        "taker_buy_ratio": [div(tb[t], v[t]) for t in range(n)],
        "order_flow_imbalance": [div(q[t], v[t]) for t in range(n)],
        "avg_trade_size": [div(v[t], trades[t]) for t in range(n)],
        "vwap_deviation": [div(cl[t], vwap[t]) - 1 for t in range(n)],
    }
    hl = [ln(div(h[t], lo[t])) for t in range(n)]
    co = [ln(div(cl[t], o[t])) for t in range(n)]
    k = 3 - 2 * math.sqrt(2)
    spread = [NAN]
    for t in range(1, n):
        beta = hl[t] ** 2 + hl[t - 1] ** 2
        gamma = ln(div(max(h[t], h[t - 1]), min(lo[t], lo[t - 1]))) ** 2
        alpha = (math.sqrt(2 * beta) - math.sqrt(beta)) / k - math.sqrt(gamma / k)
        s = 2 * (math.exp(alpha) - 1) / (1 + math.exp(alpha))
        spread.append(max(s, 0.0))
    dc = [NAN] + [cl[t] - cl[t - 1] for t in range(1, n)]
    dc_prev = [NAN] + dc[:-1]
    illiq = [div(abs(r[t]), notional[t]) for t in range(n)]
    for w in windows:
        out[f"realized_vol_{w}"] = [
            math.sqrt(x) for x in roll_stat([x * x for x in r], w, lambda obs: sum(obs))
        ]
        out[f"parkinson_vol_{w}"] = [
            math.sqrt(x / (4 * math.log(2))) for x in roll_stat([x * x for x in hl], w, mean)
        ]
        gk = [0.5 * hl[t] ** 2 - (2 * math.log(2) - 1) * co[t] ** 2 for t in range(n)]
        out[f"garman_klass_vol_{w}"] = [math.sqrt(x) for x in roll_stat(gk, w, mean)]
        out[f"cs_spread_{w}"] = roll_stat(spread, w, mean)
        auto = roll_cov(dc, dc_prev, w)
        out[f"roll_spread_{w}"] = [
            NAN if math.isnan(x) else (0.0 if x >= 0 else 2 * math.sqrt(-x)) for x in auto
        ]
        out[f"amihud_{w}"] = roll_stat(illiq, w, mean)
        cov_rq = roll_cov(r, q, w)
        var_q = roll_cov(
            [NAN if math.isnan(r[t]) else q[t] for t in range(n)],
            [NAN if math.isnan(r[t]) else q[t] for t in range(n)],
            w,
        )
        out[f"kyle_lambda_{w}"] = [div(a, b) for a, b in zip(cov_rq, var_q, strict=True)]
    return out


def check_columns(actual: dict, expected: dict):
    assert list(actual) == list(expected)
    for name, exp in expected.items():
        exp = np.asarray(exp, dtype=np.float64)
        got = actual[name]
        assert got.dtype == np.float64, name
        assert not np.isinf(got).any(), name
        np.testing.assert_array_equal(np.isnan(got), np.isnan(exp), err_msg=name)
        np.testing.assert_allclose(got, exp, rtol=1e-7, atol=1e-13, equal_nan=True, err_msg=name)


# ------------------------------------------------------------------ tests
ZERO_VOLUME = (5, 12, 13, 14, 15, 16, 30)
ZERO_TRADES = (21,)


@pytest.mark.parametrize("windows", [[4], [10, 4]])
def test_every_column_matches_its_definition(windows):
    c = candles(48, zero_volume=ZERO_VOLUME, zero_trades=ZERO_TRADES)
    out = compute_microstructure(c, windows, c["quote_volume"], vwap=c["avg_price_1m"])
    check_columns(out, reference(c, windows))
    # The zero-volume and zero-trade candles give NaN ratios, never inf.
    assert np.isnan(out["taker_buy_ratio"][list(ZERO_VOLUME)]).all()
    assert np.isnan(out["avg_trade_size"][list(ZERO_VOLUME + ZERO_TRADES)]).all()
    # Five flat candles in a row: q is constant (0), its variance 0, lambda NaN.
    assert np.isnan(out["kyle_lambda_4"][16])


def test_coin_margined_notional_is_contracts_times_contract_size():
    c = candles(40, seed=4, zero_volume=(9,))
    out = compute_microstructure(c, [6], c["volume"] * 100.0, vwap=c["avg_price_1m"])
    check_columns(out, reference(c, [6], contract_size=100.0))


def test_without_a_vwap_column_there_is_no_vwap_deviation():
    c = candles(20, seed=2)
    out = compute_microstructure(c, [4], c["quote_volume"], vwap=None)
    assert "vwap_deviation" not in out
    assert list(out)[:4] == [
        "log_return",
        "taker_buy_ratio",
        "order_flow_imbalance",
        "avg_trade_size",
    ]


def test_no_windows_gives_only_the_per_candle_columns():
    c = candles(20, seed=2)
    out = compute_microstructure(c, [], c["quote_volume"], vwap=c["avg_price_1m"])
    assert list(out) == [
        "log_return",
        "taker_buy_ratio",
        "order_flow_imbalance",
        "avg_trade_size",
        "vwap_deviation",
    ]


def test_tiny_series_give_nan_not_errors():
    for n in (0, 1, 2):
        c = candles(max(n, 1), seed=9)
        c = {k: v[:n] for k, v in c.items()}
        out = compute_microstructure(c, [4], c["quote_volume"], vwap=c["avg_price_1m"])
        assert all(len(v) == n for v in out.values())
        if n:
            assert np.isnan(out["log_return"][0])


# ------------------------------------------------------------------ no look-ahead
def write_candles(path, c: dict[str, np.ndarray], rows: int | None = None) -> None:
    n = len(c["close"]) if rows is None else rows
    arrays = [pa.array(T0 + np.arange(n, dtype=np.int64) * MIN).cast(TIME_TYPE)]
    fields = list(KLINE_SCHEMA) + [pa.field("avg_price_1m", pa.float64())]
    for f in fields[1:]:
        arrays.append(pa.array(c[f.name][:n], type=f.type))
    # The metadata key gen_kline's files carry (the loaders warn about a file without it).
    schema = pa.schema(fields, metadata={"interval": "1m"})
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)


def test_features_of_a_truncated_file_are_the_first_rows_of_the_full_files(tmp_path):
    c = candles(420, seed=21, zero_volume=(50, 51, 300), zero_trades=(77,))
    specs = parse_indicators(
        [
            {"name": "RSI", "timeperiod": 14},
            {"name": "MACD", "fastperiod": 12, "slowperiod": 26, "signalperiod": 9},
            {"name": "BBANDS", "timeperiod": 20, "nbdevup": 2, "nbdevdn": 2},
            {"name": "EMA", "timeperiod": 200},
            {"name": "ATR", "timeperiod": 14},
            {"name": "OBV"},
        ]
    )
    full_path = tmp_path / "full.pqt"
    write_candles(full_path, c)
    full = feature_table(full_path, specs, [60, 7], "avg_price_1m", None)
    assert full.num_rows == 420 and full.num_columns > 25
    for k in (1, 2, 13, 34, 61, 200, 419):
        part_path = tmp_path / f"part{k}.pqt"
        write_candles(part_path, c, rows=k)
        part = feature_table(part_path, specs, [60, 7], "avg_price_1m", None)
        assert part.column_names == full.column_names
        for name in full.column_names:
            np.testing.assert_array_equal(
                part.column(name).to_numpy(), full.column(name).to_numpy()[:k], err_msg=name
            )


# ------------------------------------------------------------------ memory handling
def test_compute_microstructure_leaves_its_inputs_unmodified():
    c = candles(60, seed=5, zero_volume=(7,))
    before = {k: v.copy() for k, v in c.items()}
    compute_microstructure(c, [10], c["quote_volume"], vwap=c["avg_price_1m"])
    for name, values in before.items():
        np.testing.assert_array_equal(c[name], values, err_msg=name)


def test_release_microstructure_takes_every_input_over_and_gives_the_same_columns():
    c = candles(60, seed=6, zero_volume=(20, 21))
    expected = compute_microstructure(c, [10, 4], c["quote_volume"], vwap=c["avg_price_1m"])
    inputs = {name: c[name].copy() for name in RELEASED_INPUTS}
    inputs["notional"] = c["quote_volume"].copy()
    inputs["vwap"] = c["avg_price_1m"].copy()
    got = release_microstructure(inputs, [10, 4])
    assert inputs == {}  # nothing left referenced: the caller's memory can be reused
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_a_file_read_in_many_batches_gives_the_features_of_one_read(tmp_path, monkeypatch):
    """The candle file is decoded READ_BATCH_ROWS rows at a time; stitching the batches
    together must give exactly the columns of a single read (checked against the values
    written, nulls read as NaN like Table.to_numpy)."""
    from crypto_lakehouse.features import job

    c = candles(100, seed=8, zero_volume=(40,))
    path = tmp_path / "c.pqt"
    write_candles(path, c)
    specs = parse_indicators([{"name": "EMA", "timeperiod": 5}])
    whole = feature_table(path, specs, [6], "avg_price_1m", None)
    monkeypatch.setattr(job, "READ_BATCH_ROWS", 7)  # 100 rows: 14 full batches and 2 rows
    read, times, _ = job._read_candles(
        path, pq.ParquetFile(path), ["close", "trade_num", "avg_price_1m"]
    )
    np.testing.assert_array_equal(read["close"], c["close"])
    np.testing.assert_array_equal(read["trade_num"], c["trade_num"].astype(np.float64))
    assert read["trade_num"].dtype == np.float64
    assert times.equals(pq.read_table(path).column("candle_begin_time").combine_chunks())
    batched = feature_table(path, specs, [6], "avg_price_1m", None)
    assert batched.schema == whole.schema and batched.num_rows == 100
    for name in whole.column_names:  # NaN equal to NaN (Table.equals says not)
        np.testing.assert_array_equal(
            batched.column(name).to_numpy(), whole.column(name).to_numpy(), err_msg=name
        )


def test_a_tail_build_decodes_each_column_chunk_of_its_candle_file_once(tmp_path, monkeypatch):
    """A tail build reads the TA-Lib inputs over the whole file and the microstructure's
    inputs from its warm-up on: the row groups both need are decoded once, not once per set
    (on S3 each read of a column chunk is a ranged GET). The features equal the rows of a
    full build."""

    c = candles(1000, seed=12, zero_volume=(610,))
    path = tmp_path / "c.pqt"
    write_candles(path, c)
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=128)  # 7 groups of 128 rows, then one of 104
    specs = parse_indicators([{"name": "EMA", "timeperiod": 5}, {"name": "ATR", "timeperiod": 9}])
    full = feature_table(path, specs, [6], "avg_price_1m", None, block=128)
    decoded: list[tuple[int, str]] = []
    real_iter = pq.ParquetFile.iter_batches

    def iter_counted(self, *args, row_groups=None, columns=None, **kwargs):
        decoded.extend((g, name) for g in row_groups for name in columns)
        return real_iter(self, *args, row_groups=row_groups, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", iter_counted)
    tail = feature_table(path, specs, [6], "avg_price_1m", None, from_row=768, block=128)
    assert len(decoded) == len(set(decoded)), sorted(decoded)
    assert {g for g, name in decoded if name == "close"} == set(range(8))  # TA-Lib's input
    assert {g for g, name in decoded if name == "quote_volume"} == {5, 6, 7}  # warm-up on
    assert tail.num_rows == 1000 - 768
    for name in full.column_names:  # NaN equal to NaN (Table.equals says not)
        np.testing.assert_array_equal(
            tail.column(name).to_numpy(), full.column(name).to_numpy()[768:], err_msg=name
        )


def test_reading_a_file_without_rows_gives_empty_columns(tmp_path):
    from crypto_lakehouse.features import job

    c = candles(5, seed=3)
    path = tmp_path / "empty.pqt"
    write_candles(path, c, rows=0)
    read, times, _ = job._read_candles(path, pq.ParquetFile(path), ["close"])
    assert len(read["close"]) == 0 and read["close"].dtype == np.float64
    assert len(times) == 0 and times.type == TIME_TYPE
