"""Times as integer milliseconds since the epoch, whatever unit a file stores them in.

Legacy V1 writes every time column as ``Datetime(ms, UTC)``; a file of another writer (an
earlier or later legacy version, a file re-saved by the user) may hold microseconds or
nanoseconds. Their raw integers are not comparable with ours: before 2026-12-06 ``compare``
matched no key of such a file, called its 1m candles "60000 s apart" and failed on a date
"out of range". Every time read for a comparison goes through ``epoch_ms``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def epoch_ms(arr):
    """``arr`` (a timestamp or date array) as int64 milliseconds since the epoch (a
    timestamp finer than ms is truncated to its millisecond); other types unchanged."""
    t = arr.type
    if pa.types.is_timestamp(t):
        if t.unit != "ms":
            arr = pc.cast(arr, pa.timestamp("ms", tz=t.tz), safe=False)
        return arr.cast(pa.int64())
    if pa.types.is_date32(t):
        return pc.multiply(arr.cast(pa.int32()).cast(pa.int64()), 86_400_000)
    if pa.types.is_date64(t):
        return arr.cast(pa.int64())
    return arr
