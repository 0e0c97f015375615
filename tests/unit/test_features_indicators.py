"""TA-Lib indicators of the features stage against textbook loops and a published example.

The references are written here from the definitions (plain loops, TA-Lib's documented
seeding: EMA starts from the SMA of its first period, RSI uses Wilder's smoothing started
from simple averages, MACD aligns both EMAs on the slow one's first value), never from our
own output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from crypto_lakehouse.features.indicators import compute_indicators
from crypto_lakehouse.features.spec import (
    DEFAULT_INDICATORS,
    FeatureConfigError,
    parse_indicators,
    validate_feature_config,
)
from tests.conftest import REPO_ROOT

NAN = float("nan")


def walk(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))


def ohlcv(close: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "open": np.concatenate([close[:1], close[:-1]]),
        "high": close * 1.002,
        "low": close * 0.997,
        "close": close,
        "volume": np.linspace(10.0, 20.0, len(close)),
    }


def compute(entries, close):
    return compute_indicators(parse_indicators(entries), ohlcv(close))


# ------------------------------------------------------------------ references (plain loops)
def ref_ema(x: list[float], period: int, seed_at: int | None = None) -> list[float]:
    """EMA with k = 2/(period+1), seeded at index ``seed_at`` (default period-1) with the
    SMA of the ``period`` values ending there; NaN before."""
    seed_at = period - 1 if seed_at is None else seed_at
    k = 2.0 / (period + 1)
    out = [NAN] * len(x)
    prev = sum(x[seed_at - period + 1 : seed_at + 1]) / period
    out[seed_at] = prev
    for i in range(seed_at + 1, len(x)):
        prev = prev + k * (x[i] - prev)
        out[i] = prev
    return out


def ref_rsi(x: list[float], period: int) -> list[float]:
    """Wilder (1978): first averages are simple means of the first ``period`` changes, then
    avg = (prev * (period - 1) + current) / period."""
    out = [NAN] * len(x)
    gains = [max(x[i] - x[i - 1], 0.0) for i in range(1, len(x))]
    losses = [max(x[i - 1] - x[i], 0.0) for i in range(1, len(x))]
    avg_gain = sum(gains[:period]) / period
    avg_loss = sum(losses[:period]) / period
    out[period] = 100.0 * avg_gain / (avg_gain + avg_loss)
    for i in range(period + 1, len(x)):
        avg_gain = (avg_gain * (period - 1) + gains[i - 1]) / period
        avg_loss = (avg_loss * (period - 1) + losses[i - 1]) / period
        out[i] = 100.0 * avg_gain / (avg_gain + avg_loss)
    return out


def ref_macd(x: list[float], fast: int, slow: int, signal: int):
    """TA-Lib's MACD: both EMAs are seeded at index slow-1 (each with the SMA of its own
    period ending there), the signal EMA is seeded with the SMA of the first ``signal`` MACD
    values; all three lines start where the signal starts."""
    fast_ema = ref_ema(x, fast, seed_at=slow - 1)
    slow_ema = ref_ema(x, slow)
    macd = [f - s for f, s in zip(fast_ema, slow_ema, strict=True)]
    start = slow - 1
    signal_line = [NAN] * start + ref_ema(macd[start:], signal)
    first = start + signal - 1
    hist = [m - s for m, s in zip(macd, signal_line, strict=True)]
    blank = [NAN] * first
    return blank + macd[first:], blank + signal_line[first:], blank + hist[first:]


def ref_bbands(x: list[float], period: int, nbdev: float):
    """SMA middle band, population standard deviation (divide by n), as TA-Lib does."""
    upper, middle, lower = ([NAN] * len(x) for _ in range(3))
    for i in range(period - 1, len(x)):
        window = x[i - period + 1 : i + 1]
        mean = sum(window) / period
        sd = math.sqrt(sum((v - mean) ** 2 for v in window) / period)
        upper[i], middle[i], lower[i] = mean + nbdev * sd, mean, mean - nbdev * sd
    return upper, middle, lower


def assert_same(actual: np.ndarray, expected: list[float], rtol=1e-9):
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.dtype == np.float64
    assert len(actual) == len(expected)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))  # same warm-up
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-12, equal_nan=True)


# ------------------------------------------------------------------ tests
def test_default_entries_give_the_documented_column_names():
    names = [c for s in parse_indicators(list(DEFAULT_INDICATORS)) for c in s.columns]
    assert names == [
        "rsi_14",
        "macd_12_26_9",
        "macd_signal_12_26_9",
        "macd_hist_12_26_9",
        "bb_upper_20_2",
        "bb_middle_20_2",
        "bb_lower_20_2",
        "ema_20",
        "ema_50",
        "ema_200",
    ]


def test_other_functions_follow_the_generic_naming_rule():
    specs = parse_indicators(
        [
            {"name": "atr", "timeperiod": 7},  # case-insensitive name, one output
            {"name": "STOCH"},  # several outputs, all parameters (defaults) in the name
            {"name": "T3", "timeperiod": 5, "vfactor": 0.7},
            {"name": "BBANDS", "timeperiod": 10, "nbdevup": 2, "nbdevdn": 1},
        ]
    )
    assert specs[0].columns == ("atr_7",)
    assert specs[1].columns == ("stoch_slowk_5_3_0_3_0", "stoch_slowd_5_3_0_3_0")
    assert specs[2].columns == ("t3_5_0p7",)
    assert specs[3].columns == ("bb_upper_10_2_1_0", "bb_middle_10_2_1_0", "bb_lower_10_2_1_0")


@pytest.mark.parametrize(
    "entries,message",
    [
        ([{"name": "EMA", "timeperiod": 5}, {"name": "NOPE"}], "features.indicators[1]"),
        ([{"name": "RSI", "window": 14}], "no parameter 'window'"),
        ([{"name": "RSI", "timeperiod": 1}], "TA-Lib refuses"),
        ([{"name": "RSI", "timeperiod": 2.5}], "must be an integer"),
        ([{"name": "MAVP"}], "not candle columns"),
        ([{"name": "EMA", "timeperiod": 20}, {"name": "EMA", "timeperiod": 20.0}], "already"),
        ([{"timeperiod": 20}], "'name'"),
    ],
)
def test_bad_entries_are_refused_naming_the_entry(entries, message):
    with pytest.raises(FeatureConfigError, match="features.indicators") as err:
        validate_feature_config({"indicators": entries})
    assert message in str(err.value)


def test_a_misspelt_function_gets_the_close_names():
    # "RSX" for RSI: the error named the entry and pointed at talib.get_functions() only.
    with pytest.raises(FeatureConfigError) as err:
        validate_feature_config({"indicators": [{"name": "RSX", "timeperiod": 14}]})
    assert "unknown TA-Lib function 'RSX' (did you mean RSI" in str(err.value)
    with pytest.raises(FeatureConfigError) as err:  # nothing close: no guess
        validate_feature_config({"indicators": [{"name": "QQQQQQQQ"}]})
    assert "did you mean" not in str(err.value)
    assert "see talib.get_functions()" in str(err.value)


def test_ema_starts_from_the_sma_of_its_first_period():
    close = walk(120)
    out = compute([{"name": "EMA", "timeperiod": 20}, {"name": "EMA", "timeperiod": 50}], close)
    assert_same(out["ema_20"], ref_ema(list(close), 20))
    assert_same(out["ema_50"], ref_ema(list(close), 50))
    assert np.isnan(out["ema_20"][:19]).all() and not np.isnan(out["ema_20"][19])


def test_rsi_uses_wilder_smoothing():
    close = walk(200, seed=3)
    out = compute([{"name": "RSI", "timeperiod": 14}], close)
    assert_same(out["rsi_14"], ref_rsi(list(close), 14))


def test_macd_matches_talib_seeding():
    close = walk(150, seed=11)
    out = compute([{"name": "MACD", "fastperiod": 12, "slowperiod": 26, "signalperiod": 9}], close)
    macd, signal, hist = ref_macd(list(close), 12, 26, 9)
    assert_same(out["macd_12_26_9"], macd)
    assert_same(out["macd_signal_12_26_9"], signal)
    assert_same(out["macd_hist_12_26_9"], hist)
    assert int(np.isnan(out["macd_12_26_9"]).sum()) == 33  # 25 + 8 warm-up rows


def test_bbands_use_the_population_standard_deviation():
    close = walk(90, seed=5)
    out = compute([{"name": "BBANDS", "timeperiod": 20, "nbdevup": 2, "nbdevdn": 2}], close)
    upper, middle, lower = ref_bbands(list(close), 20, 2.0)
    assert_same(out["bb_upper_20_2"], upper)
    assert_same(out["bb_middle_20_2"], middle)
    assert_same(out["bb_lower_20_2"], lower)


# StockCharts ChartSchool, "Relative Strength Index (RSI)", worked example spreadsheet
# cs-rsi.xls: QQQQ daily closes (14 Dec 2009 - 1 Feb 2010) and their 14-day RSI. The sheet
# shows the closes with two decimals and computes from four (the four-decimal values are the
# ones the example has circulated with); the RSI column is published with two decimals.
WILDER_EXAMPLE_CLOSES = [
    44.3389, 44.0902, 44.1497, 43.6124, 44.3278, 44.8264, 45.0955, 45.4245, 45.8433,
    46.0826, 45.8931, 46.0328, 45.6140, 46.2820, 46.2820, 46.0028, 46.0328, 46.4116,
    46.2222, 45.6439, 46.2122, 46.2521, 45.7137, 46.4515, 45.7835, 45.3548, 44.0288,
    44.1783, 44.2181, 44.5672, 43.4205, 42.6628, 43.1314,
]  # fmt: skip
WILDER_EXAMPLE_SHOWN_CLOSES = [
    44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89, 46.03,
    45.61, 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64, 46.21, 46.25, 45.71, 46.45,
    45.78, 45.35, 44.03, 44.18, 44.22, 44.57, 43.42, 42.66, 43.13,
]  # fmt: skip
WILDER_EXAMPLE_RSI = [
    70.53, 66.32, 66.55, 69.41, 66.36, 57.97, 62.93, 63.26, 56.06, 62.38, 54.71, 50.42,
    39.99, 41.46, 41.87, 45.46, 37.30, 33.08, 37.77,
]  # fmt: skip


def test_rsi_reproduces_the_published_worked_example():
    # The closes are the sheet's (they round to the two-decimal values it shows).
    np.testing.assert_allclose(
        np.round(WILDER_EXAMPLE_CLOSES, 2), WILDER_EXAMPLE_SHOWN_CLOSES, atol=1e-9
    )
    out = compute([{"name": "RSI", "timeperiod": 14}], np.array(WILDER_EXAMPLE_CLOSES))
    rsi = out["rsi_14"]
    assert np.isnan(rsi[:14]).all()  # the first RSI is on the 15th close (14 changes)
    np.testing.assert_allclose(rsi[14:], WILDER_EXAMPLE_RSI, atol=0.005 + 1e-9)


def test_series_shorter_than_the_warm_up_is_all_nan():
    out = compute([{"name": "EMA", "timeperiod": 20}], walk(10))
    assert len(out["ema_20"]) == 10 and np.isnan(out["ema_20"]).all()
    out = compute([{"name": "RSI", "timeperiod": 14}], walk(1))
    assert len(out["rsi_14"]) == 1 and np.isnan(out["rsi_14"]).all()
    out = compute([{"name": "RSI", "timeperiod": 14}], np.empty(0))
    assert len(out["rsi_14"]) == 0


def test_functions_on_several_candle_inputs_take_the_candle_columns():
    # ATR on (high, low, close), Wilder: first value at index period is the mean of the
    # first ``period`` true ranges (from index 1), then Wilder smoothing.
    close = walk(60, seed=2)
    data = ohlcv(close)
    out = compute_indicators(parse_indicators([{"name": "ATR", "timeperiod": 5}]), data)
    h, lo, c = data["high"], data["low"], data["close"]
    tr = [max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(1, 60)]
    expected = [NAN] * 60
    atr = sum(tr[:5]) / 5
    expected[5] = atr
    for i in range(6, 60):
        atr = (atr * 4 + tr[i - 1]) / 5
        expected[i] = atr
    assert_same(out["atr_5"], expected)


def test_every_candle_function_gets_its_inputs_in_talib_order():
    # Our call passes the candle columns positionally; TA-Lib's abstract API maps them by
    # name. Both must agree for every function a user may configure.
    import talib
    from talib import abstract

    data = ohlcv(walk(300, seed=13))
    checked = 0
    for name in talib.get_functions():
        try:
            (spec,) = parse_indicators([{"name": name}])
        except FeatureConfigError:
            continue  # needs a non-candle input (MAVP)
        ours = compute_indicators([spec], data)
        theirs = abstract.Function(name)(data)
        theirs = theirs if isinstance(theirs, list) else [theirs]
        for col, expected in zip(spec.columns, theirs, strict=True):
            np.testing.assert_array_equal(ours[col], np.asarray(expected, float), err_msg=col)
        checked += 1
    assert checked > 150


def test_a_features_process_does_not_import_polars_through_talib():
    """TA-Lib's package imports polars when it is installed (our analysis extra), only to
    accept polars Series: ~0.1 s of every features job. The jobs import TA-Lib without it
    (spec.talib), and polars stays importable in the same process."""
    import importlib.util
    import subprocess
    import sys

    assert importlib.util.find_spec("polars") is not None  # the dev extra installs it
    code = (
        "import sys, numpy as np\n"
        "from crypto_lakehouse.features.indicators import compute_indicators\n"
        "from crypto_lakehouse.features.spec import parse_indicators, talib_version\n"
        "specs = parse_indicators([{'name': 'RSI', 'timeperiod': 14}])\n"
        "out = compute_indicators(specs, {'close': np.linspace(1, 2, 50)})\n"
        "assert talib_version() and len(out) == 1\n"
        "print('polars' in sys.modules)\n"
        "import polars\n"
        "print(polars.Series([1]).sum())\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "1"]


def test_talib_0_6_which_takes_an_entry_of_sys_modules_as_the_module_imports(tmp_path):
    """TA-Lib 0.6.x (0.6.5 to 0.6.8 checked; pyproject allows >= 0.6) is compiled by Cython,
    whose ``import polars`` takes an entry of ``sys.modules`` as the module without the
    import system: before 2026-12-06 spec.talib hid polars with a ``None`` entry, and with
    those versions every run with features failed its config check on "'NoneType' object
    has no attribute 'DataFrame'". A stand-in ``talib`` with that import, first on the path."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "talib"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import sys\n"
        "try:  # Cython's import: an entry of sys.modules is the module, as it is\n"
        "    polars = sys.modules['polars'] if 'polars' in sys.modules else __import__('polars')\n"
        "    POLARS_FRAME = polars.DataFrame\n"
        "except ImportError as exc:\n"
        "    assert isinstance(exc, ModuleNotFoundError) and exc.name == 'polars', exc\n"
        "    POLARS_FRAME = None\n"
        "__version__ = '0.6.5'\n"
    )
    code = (
        "import sys\n"
        "from crypto_lakehouse.features.spec import talib_version\n"
        "print(talib_version(), sys.modules['talib'].POLARS_FRAME, 'polars' in sys.modules)\n"
        "import polars\n"
        "print(polars.Series([1]).sum())\n"
    )
    path = os.pathsep.join([str(tmp_path), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0.6.5", "None", "False", "1"]


def test_talib_used_first_by_several_threads_at_once_is_whole_in_each():
    """The symbols of a features job start on threads together (storage.symbols_at_once):
    each must get the whole module, not one another thread is still importing."""
    import subprocess
    import sys

    code = (
        "import threading\n"
        "from crypto_lakehouse.features.spec import _talib_functions, talib_version\n"
        "go, errors = threading.Barrier(8), []\n"
        "def first_use():\n"
        "    go.wait()\n"
        "    try:\n"
        "        assert 'RSI' in _talib_functions() and talib_version()\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=first_use) for _ in range(8)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(errors)\n"
    )
    for _ in range(3):  # a fresh process each time: the first import is the one at stake
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "[]"
