"""The page's figures, drawn with matplotlib's Agg backend into PNG bytes.

The coverage heatmap is one raster image per trade type (``imshow`` of a category grid with a
``ListedColormap``), whatever the universe's size: 2,700 symbols × 2,000 days is one
5.4-megapixel image, not millions of DOM elements. Its axes get an integer number of pixels
per cell (at least one), so nearest-neighbour drawing shows every cell and blends none.
"""

from __future__ import annotations

import io
from datetime import date, timedelta

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from crypto_lakehouse.report.coverage import CATEGORIES  # noqa: E402

DPI = 100
# archive, REST, filled, missing, pending, delisted gap, (no day): distinguishable for the
# usual colour-vision deficiencies (Okabe-Ito hues) and white outside a symbol's days.
COLOURS = ("#0072B2", "#E69F00", "#CC79A7", "#D55E00", "#F0E442", "#999999", "#FFFFFF")
_EPOCH = date(1970, 1, 1)

# Margins around the heatmap axes, in pixels: symbol labels left, dates below, legend above.
_LEFT, _RIGHT, _TOP, _BOTTOM = 110, 60, 70, 50
_LABEL_SIZE = 8  # points, the symbol and date labels
_TICK_ROOM = 16  # pixels between a symbol label and the axes: tick mark and padding, and a margin
_MIN_WIDTH = 940  # room for the legend's six entries on one line
_DATE_GAP = 12  # pixels between two date labels, at least


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _cell_pixels(cells: int, target: int, largest: int) -> int:
    """Pixels per cell: the image aims at ``target`` pixels, never less than one per cell."""
    return max(1, min(largest, target // max(cells, 1)))


def heatmap(grid: np.ndarray, symbols: list[str], day0: int, title: str) -> bytes:
    """The coverage heatmap of one trade type (``grid`` from ``coverage.category_grid``)."""
    return png_bytes(heatmap_figure(grid, symbols, day0, title))


def heatmap_figure(grid: np.ndarray, symbols: list[str], day0: int, title: str):
    """The figure of ``heatmap``: its left margin fits the longest symbol label shown."""
    n_symbols, n_days = grid.shape
    fig = plt.figure(dpi=DPI)
    renderer = fig.canvas.get_renderer()
    font = FontProperties(size=_LABEL_SIZE)
    px_x = _cell_pixels(n_days, 1200, 24)
    if n_days > 1:
        # A short range (the 3 days of the README's demo) is labelled at its first and last
        # day: their centres must lie a date label apart, or the labels overlap (at 24
        # pixels a day they did for 2 and 3 days).
        date_w = renderer.get_text_width_height_descent("2024-12-31", font, ismath=False)[0]
        px_x = max(px_x, int(np.ceil((date_w + _DATE_GAP) / (n_days - 1))))
    px_y = _cell_pixels(n_symbols, 500, 24)
    axes_w, axes_h = n_days * px_x, n_symbols * px_y
    step_y = max(1, int(np.ceil(n_symbols / max(axes_h // 14, 1))))
    ticks_y = np.arange(0, n_symbols, step_y)
    labels_y = [symbols[i] for i in ticks_y]
    widest = max(
        (renderer.get_text_width_height_descent(t, font, ismath=False)[0] for t in labels_y),
        default=0.0,
    )
    left = max(_LEFT, int(np.ceil(widest)) + _TICK_ROOM)
    fig_w, fig_h = max(axes_w + left + _RIGHT, _MIN_WIDTH), axes_h + _TOP + _BOTTOM
    fig.set_size_inches(fig_w / DPI, fig_h / DPI)
    ax = fig.add_axes((left / fig_w, _BOTTOM / fig_h, axes_w / fig_w, axes_h / fig_h))
    ax.imshow(
        grid,
        cmap=ListedColormap(COLOURS),
        vmin=-0.5,
        vmax=len(COLOURS) - 0.5,
        interpolation="nearest",
        aspect="auto",
    )
    ax.set_yticks(ticks_y, labels_y, fontsize=_LABEL_SIZE)
    n_ticks_x = max(2, min(12, axes_w // 110))
    ticks_x = np.unique(np.linspace(0, n_days - 1, n_ticks_x).round().astype(int))
    labels_x = [(_EPOCH + timedelta(days=int(day0 + i))).isoformat() for i in ticks_x]
    ax.set_xticks(ticks_x, labels_x, fontsize=_LABEL_SIZE)
    ax.set_xlabel("UTC day", fontsize=9)
    legend = [
        Patch(facecolor=c, edgecolor="#333333", label=n)
        for c, n in zip(COLOURS[: len(CATEGORIES)], CATEGORIES, strict=True)
    ]
    fig.legend(
        handles=legend,
        loc="upper left",
        bbox_to_anchor=(left / fig_w, 1 - 4 / fig_h),
        ncol=len(legend),
        fontsize=9,
        frameon=False,
        title=title,
        title_fontsize=10,
        alignment="left",
    )
    return fig


def _small_figure():
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=DPI, layout="constrained")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def _histograms(ax, values_by_type: dict[str, np.ndarray], bins: np.ndarray) -> None:
    """One bar per trade type side by side in each bin: outlines drawn over each other hid
    a trade type whose counts equal another's (every symbol of two types at score 1)."""
    if not values_by_type:
        return
    ax.hist(
        list(values_by_type.values()),
        bins=bins,
        histtype="bar",
        color=list(COLOURS[: len(values_by_type)]),
        label=list(values_by_type),
    )


def score_histogram(scores_by_type: dict[str, np.ndarray]) -> bytes:
    """Distribution of the symbol quality scores, a bar per trade type in each bin."""
    fig, ax = _small_figure()
    _histograms(ax, scores_by_type, np.linspace(0, 1, 41))
    ax.set_xlabel("symbol quality score (mean day score)")
    ax.set_ylabel("symbols")
    if scores_by_type:
        ax.legend(fontsize=8)
    return png_bytes(fig)


def lag_histogram(lags_by_type: dict[str, np.ndarray], stale_after_hours: float) -> bytes:
    """Lag of each symbol's last candle behind end_date (days), per trade type."""
    return png_bytes(lag_histogram_figure(lags_by_type, stale_after_hours))


def lag_histogram_figure(lags_by_type: dict[str, np.ndarray], stale_after_hours: float):
    """The figure of ``lag_histogram``: its x axis spans the bins from 0 (and the stale
    line), also when no symbol has a lag (before, it spanned 1.9 to 2.1 days then)."""
    fig, ax = _small_figure()
    largest = max((float(np.nanmax(v)) for v in lags_by_type.values() if len(v)), default=1.0)
    bins = np.linspace(0, max(largest / 1440, 2.0, stale_after_hours / 24 * 1.05), 41)
    _histograms(ax, {t: lags / 1440 for t, lags in lags_by_type.items()}, bins)
    ax.set_xlim(0, bins[-1])
    ax.axvline(stale_after_hours / 24, color="#333333", linestyle="--", linewidth=1)
    ax.text(stale_after_hours / 24, ax.get_ylim()[1], " stale", va="top", fontsize=8)
    ax.set_xlabel("lag of the last candle behind the end of end_date (days)")
    ax.set_ylabel("symbols")
    if lags_by_type:
        ax.legend(fontsize=8)
    return fig


def stage_bars(stages: list[str], wall_s: list[float], job_s: list[float]) -> bytes:
    """Wall time and summed job time per stage."""
    fig, ax = _small_figure()
    y = np.arange(len(stages))
    ax.barh(y - 0.2, np.nan_to_num(wall_s), height=0.4, color=COLOURS[0], label="wall time")
    ax.barh(y + 0.2, np.nan_to_num(job_s), height=0.4, color=COLOURS[1], label="jobs' own seconds")
    ax.set_yticks(y, stages)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.legend(fontsize=8)
    return png_bytes(fig)
