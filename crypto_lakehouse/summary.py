"""Run summaries: one machine-readable record per target and trade type.

``{data_dir}/lakehouse/summaries/{stage}/{trade_type}.json`` aggregates the per-symbol
stats files of that stage (files, bytes, seconds, retries, errors, quarantined files, ...)
and the figures the reports carry (quality, freshness, accuracy). Numeric stats are summed
over symbols; see docs/summaries.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from crypto_lakehouse.io import read_json, write_json
from crypto_lakehouse.smk import stats_path_for

log = logging.getLogger(__name__)

# Report keys whose values are copied per symbol into the summary (when present).
REPORT_FIGURES = ("quality", "quality_score", "freshness", "accuracy", "quarantined", "skipped")
LIST_KEYS = ("errors", "warnings", "quarantined", "failed")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _flatten(stats: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a stats record, nested keys joined with dots."""
    flat: dict[str, float] = {}
    for key, value in stats.items():
        if _is_number(value):
            flat[f"{prefix}{key}"] = value
        elif isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def summarize(stage: str, trade_type: str, report_paths: list[str]) -> dict:
    totals: dict[str, float] = {}
    problems: dict[str, dict] = {}
    figures: dict[str, dict] = {}
    for report_path in report_paths:
        report = read_json(report_path, default={}) or {}
        stats = read_json(stats_path_for(report_path), default={}) or {}
        name = f"{Path(report_path).parent.name}/{Path(report_path).stem}"
        for key, value in _flatten(stats).items():
            totals[key] = totals.get(key, 0) + value
        listed = {k: stats[k] for k in LIST_KEYS if stats.get(k)}
        if listed:
            problems[name] = listed
        picked = {k: report[k] for k in REPORT_FIGURES if report.get(k) not in (None, {}, [])}
        if picked:
            figures[name] = picked
    seconds = totals.get("seconds") or totals.get("seconds.total") or 0
    summary = {
        "stage": stage,
        "trade_type": trade_type,
        "symbols": len(report_paths),
        "totals": totals,
        "problems": problems,
        "figures": figures,
        "written_at_unix": int(time.time()),
    }
    if seconds and "bytes" in totals:
        summary["throughput_mb_s"] = totals["bytes"] / 1e6 / seconds
    if seconds and "files" in totals:
        summary["throughput_files_s"] = totals["files"] / seconds
    return summary


def headline(summary: dict) -> str:
    t = summary.get("totals", {})
    parts = [f"{summary['stage']}/{summary['trade_type']}: {summary['symbols']} symbols"]
    for key in ("files", "bytes", "rows", "requests", "retries", "errors", "quarantined"):
        if key in t:
            value = t[key]
            parts.append(f"{key}={value / 1e6:.1f}MB" if key == "bytes" else f"{key}={value:g}")
    if summary["problems"]:
        parts.append(f"symbols with problems={len(summary['problems'])}")
    return ", ".join(parts)


def run_summary(*, stage: str, trade_type: str, summary: str, reports=()) -> dict:
    report_paths = [str(p) for p in reports]
    result = summarize(stage, trade_type, report_paths)
    write_json(summary, result)
    log.info("%s (summary: %s)", headline(result), summary)
    return result
