"""HTML assembly: one self-contained page (inline CSS, figures as PNG data URIs, no script,
nothing fetched from the network), so it opens by double-click and survives being mailed."""

from __future__ import annotations

import base64
import html
import math

import pandas as pd

# The page's sections in order; the links at its top are these (``page``), and ``section``
# refuses any other (section 6, Datasets, had no link before 2026-12-06).
SECTIONS = ("Coverage", "Quality", "Freshness", "The run", "Checks", "Datasets")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em 2em;
       color: #1a1a1a; max-width: 110em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #0072B2; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-bottom: 0.3em; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.5em 0 1.5em; overflow-x: auto; }
figure img { display: block; }
figcaption { color: #555; font-size: 0.9em; }
nav a { margin-right: 1em; }
.empty { color: #777; font-style: italic; }
.alert { border: 2px solid #D55E00; background: #fff4ec; padding: 0.5em 1em; margin: 1em 0; }
.alert li { font-family: ui-monospace, monospace; font-size: 0.85em; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value, digits: int = 3) -> str:
    """Numbers for tables: integers with thousands separators, floats to ``digits``
    significant digits, missing values as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (
        isinstance(value, float) and value.is_integer() and abs(value) < 1e15
    ):
        return f"{int(value):,}"
    if isinstance(value, float):  # 1287.3 MB of RSS: "1,287", not "1.29e+03" (:.3g)
        # Judged on the rounded figure: 999.7 rounds to 1000, which :.3g writes 1e+03.
        if abs(float(f"{value:.{digits}g}")) < 10**digits:
            return f"{value:,.{digits}g}"
        return f"{value:,.0f}"
    return str(value)


def count(n: int, noun: str) -> str:
    """``n`` and the noun in the number it takes: "1 symbol", "3 symbols" (the page said
    "1 symbols" and "1 days" of a small run)."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def figure(png: bytes, alt: str, caption: str, name: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}" '
        f'data-figure="{esc(name)}"><figcaption>{esc(caption)}</figcaption></figure>'
    )


def table(frame: pd.DataFrame, numeric: tuple[str, ...] = (), empty: str = "none") -> str:
    if frame.empty:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):  # presentation rows only (≤ a few hundred)
        cells = []
        for col, value in zip(frame.columns, row, strict=True):
            if col in numeric:
                cells.append(f'<td class="num">{esc(fmt(value))}</td>')
            else:
                cells.append(f"<td>{esc(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(number: int, title: str, body: str) -> str:
    if number > len(SECTIONS) or SECTIONS[number - 1] != title:
        raise ValueError(f"report section {number}. {title} is not in page.SECTIONS")
    anchor = title.lower().replace(" ", "-")
    return f'<section id="{anchor}"><h2>{number}. {esc(title)}</h2>{body}</section>'


NO_FAILED_JOB = (
    "No job failed: the run stopped before its end (Snakemake was interrupted or terminated, "
    "or stopped on an error of its own); its log (.snakemake/log/) names the cause. Jobs it "
    "had not run yet run with the next run."
)


def failure_alert(failures: list[str], failed_jobs: int) -> str:
    """The box at the top of a page written after a failed run: its failed jobs (the lines
    of ``failures.failure_lines``, one per job but for the held-back summaries)."""
    # No failed job: the run stopped before its end without one (SIGTERM or Ctrl-C of
    # Snakemake, a lost SLURM status check). The page said nothing then, like a good run's.
    lines = failures or [NO_FAILED_JOB]
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    count = f" ({failed_jobs or len(failures)} job(s))" if failures else ""
    return (
        '<div class="alert" id="failed-run"><strong>The run that wrote this page failed</strong>'
        f"{count}. The page shows what the data dir holds after it. "
        "A trade type without a summary below (section 4: none) did not finish that "
        "stage; the trade types that finished have theirs. The next run retries what "
        "failed."
        f"<ul>{items}</ul></div>"
    )


def page(title: str, meta: str, sections: list[str], alert: str = "") -> str:
    nav = "".join(
        f'<a href="#{t.lower().replace(" ", "-")}">{i}. {esc(t)}</a>'
        for i, t in enumerate(SECTIONS, start=1)
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
        f'<h1>{esc(title)}</h1><p class="meta">{esc(meta)}</p>{alert}<nav>{nav}</nav>'
        + "".join(sections)
        + "</body></html>\n"
    )
