"""Funding rates of one symbol and their join onto the filled grid (legacy §8.3, Q4/Q5 fixed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from crypto_lakehouse import layout, storage
from crypto_lakehouse.schema import cast_column, epoch_ms

log = logging.getLogger(__name__)

FUNDING_COLUMN = "funding_rate"


@dataclass
class FundingEvents:
    """Funding events keyed by ``candle_begin_time`` (int64 ms, ascending, unique)."""

    time: np.ndarray
    rate: np.ndarray
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.time)


def _read_events(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = storage.read_parquet(path, columns=["candle_begin_time", "funding_rate"])
    time = epoch_ms(table.column("candle_begin_time"))
    rate = cast_column(table.column("funding_rate"), pa.float64())
    if time.null_count or rate.null_count:
        raise ValueError("null candle_begin_time or funding_rate")
    return time.to_numpy(), rate.to_numpy()


def read_funding(data_dir, trade_type: str, symbol: str, strict: bool = False) -> FundingEvents:
    """Archive funding followed by REST funding; on the same ``candle_begin_time`` the later
    row wins, so REST wins over the archive. Either source may be missing (Q5: REST funding
    is used even when the archive has none).

    A file that cannot be read is left out and named in ``problems``; with ``strict`` (the
    generator), one that cannot be decoded raises ``shards.DamagedInput`` for its writer
    (the parse, or the REST fill) to rebuild, and a failing store (``StorageError``) or
    machine (``storage.is_machine_error``: no permission) raises as it is: left out, the
    symbol's funding rates would be written as 0.0 for good."""
    times, rates, problems = [], [], []
    paths = [
        layout.parsed_funding_path(data_dir, trade_type, symbol),
        layout.api_funding_path(data_dir, trade_type, symbol),
    ]

    def read(path) -> tuple | Exception | None:
        # Read without asking first whether it exists (on S3 a round trip per file).
        try:
            return _read_events(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # a bad file is reported, the other source still counts
            return exc

    at_once = storage.at_once(paths[0], 2)  # on S3 the two round trips at once
    for path, read_events in zip(paths, storage.concurrently(read, paths, at_once), strict=True):
        if isinstance(read_events, Exception):
            if strict:
                _raise_if_damaged(data_dir, trade_type, symbol, path, read_events)
            problems.append(f"{path}: {read_events}")
            log.warning("skipping funding file %s: %s", path, read_events)
        elif read_events is not None:
            times.append(read_events[0])
            rates.append(read_events[1])
    if not times:
        return FundingEvents(np.empty(0, np.int64), np.empty(0, np.float64), problems)
    time = np.concatenate(times)
    rate = np.concatenate(rates)
    order = np.argsort(time, kind="stable")
    time, rate = time[order], rate[order]
    last = np.ones(len(time), dtype=bool)
    last[:-1] = time[1:] != time[:-1]
    return FundingEvents(time[last], rate[last], problems)


def _raise_if_damaged(data_dir, trade_type: str, symbol: str, path, exc: Exception) -> None:
    import functools

    from crypto_lakehouse.parse import wrote_funding_file
    from crypto_lakehouse.shards import reading_output_of

    if isinstance(exc, storage.StorageError) or storage.is_machine_error(exc):
        raise exc  # the file may be fine: a later run reads it
    if not storage.is_damaged_file_error(exc):
        return  # a content problem (nulls): named among the problems
    if str(path) == str(layout.api_funding_path(data_dir, trade_type, symbol)):
        context = reading_output_of("api_download", path)
    else:
        wrote = functools.partial(wrote_funding_file, data_dir, trade_type, symbol)
        context = reading_output_of("aws_parse", path, wrote)
    with context:
        raise exc


def events_in_range(events: FundingEvents, first_ms: int, last_ms: int, step_ms: int) -> slice:
    """Events settled during the candles ``first_ms`` … ``last_ms`` (the grid's first and
    last candle, ``step_ms`` apart): ``candle_begin_time`` in ``[first_ms, last_ms + step_ms)``.

    At 1m … 1h every event's (hour-floored) time is a candle's open; at a coarser interval
    an event can fall inside a candle, the last one included (before 2026-12-06 the range
    ended at the last candle's open: a 1d file's last day kept its 00:00 event only)."""
    lo = int(np.searchsorted(events.time, first_ms, side="left"))
    hi = int(np.searchsorted(events.time, last_ms + step_ms, side="left"))
    return slice(lo, hi)


def join_funding(grid_time: np.ndarray, step_ms: int, events: FundingEvents) -> np.ndarray:
    """Funding column on the filled grid: each event's rate on the candle that contains its
    ``candle_begin_time`` (the HH:00 candle at 1m), 0 elsewhere; a candle that contains
    several events (an interval coarser than their spacing, e.g. 1d with 8-hourly funding)
    holds their sum, the funding settled during the candle.

    The grid is complete, so no event inside it can be lost (legacy joined before the fill
    and lost events whose HH:00 minute had no trade: Q4).
    """
    if len(grid_time) == 0:
        return np.zeros(0, dtype=np.float64)
    inside = events_in_range(events, int(grid_time[0]), int(grid_time[-1]), step_ms)
    rows = (events.time[inside] - grid_time[0]) // step_ms
    # Events are unique per candle_begin_time; at coarser intervals two may share a candle.
    return np.bincount(rows, weights=events.rate[inside], minlength=len(grid_time)).astype(
        np.float64, copy=False
    )


def count_outside(events: FundingEvents, ranges: list[tuple[int, int]], step_ms: int) -> int:
    """Events not settled during any range of candles ``(first_ms, last_ms)``
    (``events_in_range``)."""
    inside = np.zeros(len(events), dtype=bool)
    for first_ms, last_ms in ranges:
        inside[events_in_range(events, first_ms, last_ms, step_ms)] = True
    return int(len(events) - inside.sum())
