"""What a comparison produces: differences, each with its class, and per-pair results.

Classes, from best to worst: ``equal``, ``within_tolerance``, ``explained`` (by a documented
fix of ``docs/differences-from-bhds.md``, named by its section id), ``unexplained``.
Everything here is plain data (picklable, JSON-able) so that worker processes return it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

EQUAL = "equal"
WITHIN = "within_tolerance"
EXPLAINED = "explained"
UNEXPLAINED = "unexplained"
CLASSES = (EQUAL, WITHIN, EXPLAINED, UNEXPLAINED)
_RANK = {c: i for i, c in enumerate(CLASSES)}

# Difference kinds
FILE_ONLY = "file_only"  # side = the side that has the file
UNREADABLE = "unreadable"
INTERVAL = "interval"
ROW_ORDER = "row_order"  # side = the side whose file is not in time order
COLUMN_ONLY = "column_only"
COLUMN_ORDER = "column_order"
COLUMN_TYPE = "column_type"
ROWS_ONLY = "rows_only"
DUPLICATE_ROWS = "duplicate_rows"
VALUES = "values"
SEGMENTS = "segments"

MAX_RANGES = 20  # time ranges listed per difference (the count covers all of them)


def worst(classes) -> str:
    return max(classes, key=_RANK.__getitem__, default=EQUAL)


def iso(ms) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def plain(value):
    """A JSON-able scalar for a value read from a column."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


@dataclass
class Difference:
    file: str
    kind: str
    status: str
    side: str | None = None  # "legacy" / "ours" for one-sided differences
    column: str | None = None
    count: int = 1  # rows (or files, columns) concerned
    first_time: str | None = None  # first differing candle (UTC)
    legacy_value: object = None
    our_value: object = None
    max_abs: float | None = None
    max_rel: float | None = None
    ranges: list = field(default_factory=list)  # [[first, last, rows], ...] (MAX_RANGES)
    fix: str | None = None  # section id in docs/differences-from-bhds.md
    note: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, [], "")}


@dataclass
class PairResult:
    file: str
    kind: str
    trade_type: str
    symbol: str
    legacy_files: list[str]
    our_files: list[str]
    legacy_rows: int | None = None
    our_rows: int | None = None
    common_rows: int | None = None
    columns: dict = field(default_factory=dict)  # name → {status, max_abs, max_rel}
    differences: list[Difference] = field(default_factory=list)

    @property
    def status(self) -> str:
        return worst(d.status for d in self.differences)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "differences"}
        out["status"] = self.status
        out["differences"] = [d.to_dict() for d in self.differences]
        return out
