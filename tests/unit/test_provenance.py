"""Per-day provenance rules and the report summary, on hand-made counts."""

from __future__ import annotations

import pandas as pd

from crypto_lakehouse.provenance import (
    PROVENANCE_SCHEMA,
    build_provenance,
    day_number,
    day_ranges,
    summarize_provenance,
)

D = day_number("2024-03-01")


def test_day_number_round_trip_and_ranges():
    assert day_number("1970-01-02") == 1
    assert day_ranges([D + 3, D, D + 1, D + 7]) == [
        ["2024-03-01", "2024-03-02"],
        ["2024-03-04", "2024-03-04"],
        ["2024-03-08", "2024-03-08"],
    ]
    assert day_ranges([]) == []


def test_sources_by_rule():
    # D: archive complete; D+1: short archive + REST (union 1440); D+2: REST only;
    # D+3: nothing after REST (empty file); D+4: short archive, REST empty;
    # D+5: short archive, not fetched yet; D+6: the still-open day.
    archive = pd.Series({D: 1440, D + 1: 1000, D + 4: 700, D + 5: 10})
    rest = pd.Series({D + 1: 1440, D + 2: 1440, D + 3: 0, D + 4: 0})
    union = pd.Series({D + 1: 1440})
    t = build_provenance(
        first_day=D,
        last_day=D + 6,
        last_complete_day=D + 5,
        expected_rows=1440,
        archive_rows=archive,
        rest_rows=rest,
        union_rows=union,
    )
    assert t.schema == PROVENANCE_SCHEMA
    df = t.to_pandas()
    assert df["source"].tolist() == [
        "archive",
        "mixed",
        "rest",
        "missing",
        "archive_partial",
        "pending",
        "pending",
    ]
    assert df["rows"].tolist() == [1440, 1440, 1440, 0, 700, 10, 0]
    assert df["complete"].tolist() == [True, True, True, False, False, False, False]
    assert df["rest_fetched"].tolist() == [False, True, True, True, True, False, False]
    assert str(df["day"].iloc[0]) == "2024-03-01"


def test_summary_counts_ranges_and_freshness():
    archive = pd.Series({D: 1440})
    rest = pd.Series({D + 1: 0, D + 2: 0, D + 3: 1440})
    t = build_provenance(
        first_day=D,
        last_day=D + 4,
        last_complete_day=D + 3,
        expected_rows=1440,
        archive_rows=archive,
        rest_rows=rest,
    )
    last = (D + 3) * 86_400_000 + 1439 * 60_000  # 23:59 of D+3
    s = summarize_provenance(t, last_candle_ms=last, interval_ms=60_000, end_day=D + 4)
    assert s["days_by_source"] == {
        "archive": 1,
        "pending": 1,
        "missing": 2,
        "rest": 1,
        "archive_partial": 0,
        "mixed": 0,
    }
    assert s["missing_days"] == [["2024-03-02", "2024-03-03"]]
    assert s["pending_days"] == [["2024-03-05", "2024-03-05"]]
    assert s["last_candle"] == "2024-03-04T23:59:00Z"
    assert s["freshness_lag_minutes"] == 1440  # all of end_date (D+4) is still missing
    s = summarize_provenance(t, last_candle_ms=last, interval_ms=60_000, end_day=D + 3)
    assert s["freshness_lag_minutes"] == 0


def test_empty_range():
    t = build_provenance(
        first_day=D,
        last_day=D - 1,
        last_complete_day=D,
        expected_rows=24,
        archive_rows=pd.Series(dtype="int64"),
        rest_rows=pd.Series(dtype="int64"),
    )
    assert t.num_rows == 0
    assert (
        summarize_provenance(t, last_candle_ms=None, interval_ms=3_600_000, end_day=D)[
            "last_candle"
        ]
        is None
    )
