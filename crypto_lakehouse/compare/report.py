"""Renderers of a ``CompareReport``: text, JSON and Markdown carry the same content.

Order: the summary per trade type and file kind (counts per class), argument problems, every
unexplained difference (file, column, first differing time, both values), then the explained
ones grouped by fix, then those within tolerance.
"""

from __future__ import annotations

import json
import math

from crypto_lakehouse.compare.explain import FIXES
from crypto_lakehouse.compare.model import CLASSES, WITHIN, Difference


def to_dict(report, strict: bool = False) -> dict:
    return {
        "legacy_dir": report.legacy_dir,
        "new_dir": report.new_dir,
        "settings": report.settings | {"strict": strict},
        "exit_code": report.exit_code(strict),
        "summary": report.summary(),
        "problems": list(report.problems),
        "unexplained": [d.to_dict() for d in report.unexplained],
        "explained": [d.to_dict() for d in report.explained],
        "explained_by_fix": {
            k: {"title": FIXES[k].title, "differences": n} for k, n in report.fix_counts().items()
        },
        "within_tolerance_by_column": _within_by_column(report),
        "within_tolerance": [d.to_dict() for d in report.differences() if d.status == WITHIN],
        "files": [
            {
                "file": p.file,
                "kind": p.kind,
                "trade_type": p.trade_type,
                "status": p.status,
                "legacy_rows": p.legacy_rows,
                "our_rows": p.our_rows,
                "common_rows": p.common_rows,
                "columns": p.columns,
            }
            for p in report.pairs
        ],
    }


def _within_by_column(report) -> list[dict]:
    """Differences within tolerance, per trade type, file kind and column."""
    agg: dict[tuple, dict] = {}
    for p in report.pairs:
        for d in p.differences:
            if d.status != WITHIN:
                continue
            row = agg.setdefault(
                (p.trade_type, p.kind, d.column),
                {
                    "trade_type": p.trade_type,
                    "kind": p.kind,
                    "column": d.column,
                    "files": 0,
                    "rows": 0,
                    "max_abs": 0.0,
                    "max_rel": 0.0,
                },
            )
            row["files"] += 1
            row["rows"] += d.count
            row["max_abs"] = max(row["max_abs"], d.max_abs or 0.0)
            row["max_rel"] = max(row["max_rel"], d.max_rel or 0.0)
    return list(agg.values())


MAX_LISTED = 50  # explained differences listed per fix in text and Markdown (JSON: all)


def _finite(value):
    """``value`` with every non-finite float as the string ``"inf"``, ``"-inf"`` or
    ``"nan"``: JSON has no such numbers, and Python's ``Infinity``/``NaN`` tokens are
    refused by strict parsers (jq, JavaScript's JSON.parse). Before 2026-12-06 a file
    holding an infinite value made the report unreadable to them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def render_json(report, strict: bool = False) -> str:
    data = _finite(to_dict(report, strict))
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.10g}"
    return str(v)


def _where(d: dict) -> str:
    kind, side, column = d.get("kind", ""), d.get("side"), d.get("column")
    what = {
        "file_only": "file",
        "rows_only": "rows",
        "column_only": f"column {column}",
    }.get(kind)
    if what and side:
        return f"{what} only on the {side} side"
    parts = [kind.replace("_", " ")]
    if column:
        parts.append(f"column {column}")
    if side:
        parts.append(f"({side})")
    return " ".join(parts)


def _detail(d: dict) -> str:
    bits = []
    if d.get("first_time"):
        bits.append(f"first at {d['first_time']}")
    if d["kind"] in ("rows_only", "values", "duplicate_rows"):
        bits.append(f"{d.get('count', 1)} rows")
    if "legacy_value" in d or "our_value" in d:
        bits.append(f"legacy {_fmt(d.get('legacy_value'))} vs ours {_fmt(d.get('our_value'))}")
    if d.get("max_abs") is not None:
        bits.append(f"max abs {_fmt(d['max_abs'])}, max rel {_fmt(d.get('max_rel'))}")
    if d.get("ranges"):
        shown = "; ".join(f"{a} .. {b} ({n})" for a, b, n in d["ranges"][:5])
        more = len(d["ranges"]) - 5
        bits.append(f"ranges {shown}" + (f"; +{more} more" if more > 0 else ""))
    return ", ".join(b for b in bits if b)


def _line(d: dict) -> str:
    detail = _detail(d)
    return f"{d['file']}: {_where(d)}" + (f": {detail}" if detail else "")


def _summary_rows(data: dict) -> list[list[str]]:
    rows = []
    for r in data["summary"]:
        rows.append(
            [r["trade_type"], r["kind"]]
            + [str(r["files"][c]) for c in CLASSES]
            + [str(r["differences"][c]) for c in CLASSES[1:]]
        )
    return rows


SUMMARY_HEAD = (
    ["trade type", "file kind"]
    + [f"files {c}" for c in CLASSES]
    + [f"diffs {c}" for c in CLASSES[1:]]
)


def _window_line(data: dict) -> list[str]:
    """The time window of ``--start``/``--end``, when one was given."""
    start, end = data["settings"].get("start"), data["settings"].get("end")
    if start is None and end is None:
        return []
    if end is None:
        bounds = f"from {start} on"
    elif start is None:
        bounds = f"before {end}"
    else:
        bounds = f"from {start} to before {end}"
    return [f"Only rows {bounds} (UTC) compared (--start/--end); files without any are left out."]


def render_text(report, strict: bool = False) -> str:
    data = to_dict(report, strict)
    out = [f"compare {data['legacy_dir']} (legacy) with {data['new_dir']} (ours)"]
    out += _window_line(data) + [""]
    rows = [SUMMARY_HEAD] + _summary_rows(data)
    widths = [max(len(r[i]) for r in rows) for i in range(len(SUMMARY_HEAD))]
    for r in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    out.append("")
    if data["problems"]:
        out.append(f"PROBLEMS ({len(data['problems'])})")
        out += [f"  {p}" for p in data["problems"]]
        out.append("")
    out.append(f"UNEXPLAINED ({len(data['unexplained'])})")
    for d in data["unexplained"]:
        out.append(f"  {_line(d)}")
        if d.get("note"):
            out.append(f"      {d['note']}")
    out.append("")
    out.append(f"EXPLAINED ({len(data['explained'])})")
    for fix, info in data["explained_by_fix"].items():
        out.append(f"  {fix} {info['title']}: {info['differences']} differences")
        listed = [x for x in data["explained"] if x.get("fix") == fix]
        for d in listed[:MAX_LISTED]:
            out.append(f"    {_line(d)}")
        if len(listed) > MAX_LISTED:
            out.append(f"    ... {len(listed) - MAX_LISTED} more (all in --format json)")
    out.append("")
    out.append(f"WITHIN TOLERANCE ({len(data['within_tolerance'])})")
    for r in data["within_tolerance_by_column"]:
        out.append(
            f"  {r['trade_type']} {r['kind']} column {r['column']}: {r['rows']} rows in "
            f"{r['files']} files, max abs {_fmt(r['max_abs'])}, "
            f"max rel {_fmt(r['max_rel'])}"
        )
    out.append("")
    verdict = "OK" if data["exit_code"] == 0 else "FAILED"
    out.append(
        f"{verdict}: {len(data['unexplained'])} unexplained, {len(data['explained'])} "
        f"explained, {len(data['within_tolerance'])} within tolerance, "
        f"{len(data['problems'])} problems (exit {data['exit_code']})"
    )
    return "\n".join(out) + "\n"


def _md_table(head, rows) -> list[str]:
    if not rows:
        return ["None."]
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(r) + " |" for r in esc
    ]


def render_markdown(report, strict: bool = False) -> str:
    data = to_dict(report, strict)
    out = [
        f"# compare: `{data['legacy_dir']}` (legacy) vs `{data['new_dir']}` (ours)",
        "",
        *[line for line in _window_line(data) for line in (line, "")],
        "## Summary",
        "",
    ]
    out += _md_table(SUMMARY_HEAD, _summary_rows(data))
    if data["problems"]:
        out += ["", "## Problems", ""] + [f"- {p}" for p in data["problems"]]
    head = ["file", "difference", "details", "note"]
    out += ["", f"## Unexplained ({len(data['unexplained'])})", ""]
    out += _md_table(
        head,
        [[f"`{d['file']}`", _where(d), _detail(d), d.get("note", "")] for d in data["unexplained"]],
    )
    out += ["", f"## Explained ({len(data['explained'])})", ""]
    for fix, info in data["explained_by_fix"].items():
        out += [f"### {fix} {info['title']} ({info['differences']})", ""]
        listed = [d for d in data["explained"] if d.get("fix") == fix]
        out += _md_table(
            head[:3], [[f"`{d['file']}`", _where(d), _detail(d)] for d in listed[:MAX_LISTED]]
        )
        if len(listed) > MAX_LISTED:
            out.append(f"\n{len(listed) - MAX_LISTED} more (all in `--format json`)")
        out.append("")
    out += ["", f"## Within tolerance ({len(data['within_tolerance'])})", ""]
    out += _md_table(
        ["trade type", "file kind", "column", "files", "rows", "max abs", "max rel"],
        [
            [
                r["trade_type"],
                r["kind"],
                r["column"],
                str(r["files"]),
                str(r["rows"]),
                _fmt(r["max_abs"]),
                _fmt(r["max_rel"]),
            ]
            for r in data["within_tolerance_by_column"]
        ],
    )
    out += [
        "",
        f"**Exit code {data['exit_code']}**: {len(data['unexplained'])} unexplained, "
        f"{len(data['explained'])} explained, {len(data['within_tolerance'])} within "
        f"tolerance, {len(data['problems'])} problems.",
    ]
    return "\n".join(out) + "\n"


RENDERERS = {"text": render_text, "json": render_json, "markdown": render_markdown}


def render(report, fmt: str = "text", strict: bool = False) -> str:
    return RENDERERS[fmt](report, strict)


__all__ = ["Difference", "RENDERERS", "render", "to_dict"]
