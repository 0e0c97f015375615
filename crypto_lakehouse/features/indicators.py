"""TA-Lib indicators on one candle file: one TA-Lib call per configured entry."""

from __future__ import annotations

import numpy as np

from crypto_lakehouse.features.spec import IndicatorSpec, talib


def compute_indicator(spec: IndicatorSpec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``spec``'s columns for the candle series ``inputs`` (float64 arrays by TA-Lib input
    name). TA-Lib runs once on the whole series: its warm-up rows are NaN, exactly as it
    returns them."""
    n = len(next(iter(inputs.values()))) if inputs else 0
    if n == 0:
        return {col: np.empty(0, dtype=np.float64) for col in spec.columns}
    # The function API with the inputs in TA-Lib's argument order (the order of the
    # abstract API's input_names; a test checks every function against talib.abstract).
    function = getattr(talib(), spec.function)
    result = function(*(inputs[name] for name in spec.inputs), **spec.param_dict)
    if len(spec.outputs) == 1:
        result = [result]
    return {
        col: np.asarray(values, dtype=np.float64)
        for col, values in zip(spec.columns, result, strict=True)
    }


def compute_indicators(
    specs: list[IndicatorSpec], inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for spec in specs:
        columns.update(compute_indicator(spec, inputs))
    return columns
