"""``features`` config: TA-Lib indicator entries (checked, normalised, named) and windows.

An entry ``{name: RSI, timeperiod: 14}`` names a TA-Lib function and some of its parameters.
It is resolved against TA-Lib's own function metadata (``talib.abstract``), so any of its
functions can be configured; the rest of the pipeline only sees :class:`IndicatorSpec`.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
from dataclasses import dataclass

import numpy as np

# Candle columns a TA-Lib function may take as input (TA-Lib's price series names).
CANDLE_INPUTS = ("open", "high", "low", "close", "volume")

# The shipped defaults (the schema repeats them); column names in docs/features.md.
DEFAULT_INDICATORS = (
    {"name": "RSI", "timeperiod": 14},
    {"name": "MACD", "fastperiod": 12, "slowperiod": 26, "signalperiod": 9},
    {"name": "BBANDS", "timeperiod": 20, "nbdevup": 2, "nbdevdn": 2},
    {"name": "EMA", "timeperiod": 20},
    {"name": "EMA", "timeperiod": 50},
    {"name": "EMA", "timeperiod": 200},
)
DEFAULT_WINDOWS = (60,)

# Rows of the synthetic series every entry is test-called on at config time, so that a
# parameter TA-Lib refuses (a period of 1, an unknown MA type) fails before any job runs.
_PROBE_ROWS = 64


class FeatureConfigError(ValueError):
    """A ``features`` config value that cannot be used; the message names the entry."""


@dataclass(frozen=True)
class IndicatorSpec:
    """One resolved indicator entry."""

    function: str  # TA-Lib name, upper case
    params: tuple[tuple[str, float | int], ...]  # every parameter, TA-Lib order, defaults filled
    inputs: tuple[str, ...]  # candle columns the function reads, in its argument order
    outputs: tuple[str, ...]  # TA-Lib output names
    columns: tuple[str, ...]  # our column name per output

    @property
    def param_dict(self) -> dict[str, float | int]:
        return dict(self.params)

    def as_config(self) -> dict:
        return {"name": self.function, **self.param_dict}


_TALIB_IMPORT = threading.Lock()
_TALIB: list = []  # the module, once its import has finished


class _NoPolars:
    """Meta path finder for the time of TA-Lib's import: ``import polars`` (or a submodule)
    raises ModuleNotFoundError, as if polars were not installed. Not a ``None`` entry in
    ``sys.modules``: TA-Lib 0.6's compiled modules take such an entry as the module
    (Cython looks in ``sys.modules`` first) and failed at import on ``None.DataFrame``."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "polars" or name.startswith("polars."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def talib():
    """The ``talib`` module, imported without polars. TA-Lib's package imports polars, when
    it is installed (our ``analysis`` extra), only to accept polars Series; that import
    costs a features job ~0.1 s and the jobs pass numpy arrays. A process that already
    imported polars keeps it, and polars stays importable afterwards. Thread-safe: the
    symbols of a features job may start on threads together, and a module in
    ``sys.modules`` may still be initialising."""
    if not _TALIB:
        with _TALIB_IMPORT:
            if not _TALIB:
                hide = "polars" not in sys.modules
                if hide:
                    sys.meta_path.insert(0, _NoPolars)
                try:
                    import talib as module
                finally:
                    if hide:
                        sys.meta_path.remove(_NoPolars)
                _TALIB.append(module)
    return _TALIB[0]


@functools.lru_cache(maxsize=None)
def _talib_functions() -> frozenset[str]:
    return frozenset(talib().get_functions())


def _function_info(name: str) -> dict:
    talib()
    from talib import abstract

    return abstract.Function(name).info


def talib_version() -> str:
    return str(talib().__version__)


def _format_value(value: float | int) -> str:
    """A parameter value inside a column name: ``14``, ``2`` for 2.0, ``0p7`` for 0.7."""
    if float(value).is_integer():
        text = str(int(value))
    else:
        text = repr(float(value))
    return text.replace("-", "m").replace(".", "p")


def column_names(function: str, params: dict, outputs: list[str]) -> tuple[str, ...]:
    """Output column names (docs/features.md, "Column names").

    MACD and Bollinger Bands keep the names researchers use (``macd_signal_12_26_9``,
    ``bb_upper_20_2``); every other function is ``{function}[_{output}]_{values}``, lower
    case, the output name only when the function has several, the values of all its
    parameters in TA-Lib's order (defaults filled in, so one computation has one name).
    """
    values = [_format_value(v) for v in params.values()]
    if function == "MACD":
        tail = "_".join(values)
        return (f"macd_{tail}", f"macd_signal_{tail}", f"macd_hist_{tail}")
    if function == "BBANDS":
        p = params
        if p["nbdevup"] == p["nbdevdn"] and int(p["matype"]) == 0:
            tail = f"{_format_value(p['timeperiod'])}_{_format_value(p['nbdevup'])}"
        else:
            tail = "_".join(values)
        return tuple(f"bb_{band}_{tail}" for band in ("upper", "middle", "lower"))
    stem = function.lower()
    suffix = f"_{'_'.join(values)}" if values else ""
    if len(outputs) == 1:
        return (f"{stem}{suffix}",)
    return tuple(f"{stem}_{out.lower()}{suffix}" for out in outputs)


def _inputs(info: dict) -> tuple[str, ...]:
    """The price series of a function in the order of its positional arguments."""
    names: list[str] = []
    for value in info["input_names"].values():
        names.extend(value if isinstance(value, (list, tuple)) else [value])
    return tuple(names)


def _probe_inputs() -> dict[str, np.ndarray]:
    """A small, valid OHLCV series (deterministic) for test calls."""
    t = np.arange(_PROBE_ROWS, dtype=np.float64)
    close = 100.0 + np.sin(t / 3.0) * 5.0 + t * 0.1
    return {
        "open": close - 0.5,
        "high": close + 1.0,
        "low": close - 1.5,
        "close": close,
        "volume": 1000.0 + (t % 7) * 10.0,
    }


def parse_indicator(entry, where: str) -> IndicatorSpec:
    """Resolve one config entry; ``where`` (e.g. ``features.indicators[2]``) names it in errors."""
    if not isinstance(entry, dict) or "name" not in entry:
        raise FeatureConfigError(f"{where}: {entry!r} must be a mapping with a 'name' key")
    raw_name = entry["name"]
    name = str(raw_name).upper()
    if name not in _talib_functions():
        import difflib

        close = difflib.get_close_matches(name, _talib_functions(), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise FeatureConfigError(
            f"{where}: unknown TA-Lib function {raw_name!r} ({hint}see talib.get_functions())"
        )
    info = _function_info(name)
    params = dict(info["parameters"])
    for key, value in entry.items():
        if key == "name":
            continue
        if key not in params:
            raise FeatureConfigError(
                f"{where}: {name} has no parameter {key!r} (its parameters: {', '.join(params)})"
            )
        default = params[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FeatureConfigError(f"{where}: {name} parameter {key!r} must be a number")
        if isinstance(default, int) and not float(value).is_integer():
            raise FeatureConfigError(f"{where}: {name} parameter {key!r} must be an integer")
        if not math.isfinite(float(value)):
            raise FeatureConfigError(f"{where}: {name} parameter {key!r} must be finite")
        params[key] = int(value) if isinstance(default, int) else float(value)
    inputs = _inputs(info)
    foreign = sorted({i for i in inputs if i not in CANDLE_INPUTS})
    if foreign:
        raise FeatureConfigError(
            f"{where}: {name} needs input(s) {foreign} that are not candle columns "
            f"(usable: {', '.join(CANDLE_INPUTS)})"
        )
    outputs = list(info["output_names"])
    spec = IndicatorSpec(
        function=name,
        params=tuple(params.items()),
        inputs=inputs,
        outputs=tuple(outputs),
        columns=column_names(name, params, outputs),
    )
    from crypto_lakehouse.features.indicators import compute_indicator

    try:  # TA-Lib checks parameter ranges only when called
        compute_indicator(spec, _probe_inputs())
    except Exception as exc:
        raise FeatureConfigError(f"{where}: TA-Lib refuses {spec.as_config()}: {exc}") from exc
    return spec


def parse_indicators(entries) -> list[IndicatorSpec]:
    """Resolve the ``features.indicators`` list; duplicate column names are refused."""
    specs: list[IndicatorSpec] = []
    owner: dict[str, int] = {}
    for i, entry in enumerate(entries or []):
        where = f"features.indicators[{i}]"
        spec = parse_indicator(entry, where)
        for col in spec.columns:
            if col in owner:
                raise FeatureConfigError(
                    f"{where}: column {col!r} is already produced by "
                    f"features.indicators[{owner[col]}]"
                )
            owner[col] = i
        specs.append(spec)
    return specs


def parse_windows(windows) -> list[int]:
    out: list[int] = []
    for i, w in enumerate(windows or []):
        if isinstance(w, bool) or not isinstance(w, int) or w < 2:
            raise FeatureConfigError(
                f"features.microstructure.windows[{i}]: {w!r} must be an integer >= 2"
            )
        if w in out:
            raise FeatureConfigError(f"features.microstructure.windows[{i}]: {w} is repeated")
        out.append(w)
    return out


def validate_feature_config(features: dict) -> tuple[list[IndicatorSpec], list[int]]:
    """Check the ``features`` block (config time and job start); returns the resolved parts."""
    specs = parse_indicators(features.get("indicators", list(DEFAULT_INDICATORS)))
    windows = parse_windows(
        (features.get("microstructure") or {}).get("windows", list(DEFAULT_WINDOWS))
    )
    from crypto_lakehouse.features.microstructure import microstructure_columns

    taken = {c: "an indicator" for s in specs for c in s.columns}
    for col in microstructure_columns(windows, with_vwap=True):
        if col in taken:
            raise FeatureConfigError(
                f"features.indicators: column {col!r} collides with a microstructure column"
            )
    return specs, windows
