"""Charts written as SVG text, with no dependency: line charts of per-epoch series and a
heat map of a confusion matrix. Each is an ``<svg>`` element with a ``viewBox``, so it
scales to the page; colours are the Okabe-Ito palette, which colour-blind readers tell apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9")
FONT = 'font-family="system-ui, sans-serif"'


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values, about ``count`` of them, from at most ``low`` to at least ``high``."""
    if high <= low:  # one value: a range around it
        half = abs(low) / 2 or 0.5
        low, high = low - half, high + half
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, max(last, first + 1) + 1)]


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        return f"{value:.0e}"
    return f"{value:.6g}"


def line_chart(
    title: str,
    x: Sequence[float],
    series: dict[str, Sequence[float]],
    y_label: str = "",
    x_label: str = "epoch",
    zero: bool = False,
) -> str:
    """An SVG line chart of ``series`` (name -> one value per ``x``), with markers, axes,
    a grid and a legend (for two series or more); ``zero``: the y axis starts at 0 or below.
    Non-finite values are left out."""
    values = [v for ys in series.values() for v in ys if math.isfinite(v)] + ([0.0] * zero)
    y_ticks = nice_ticks(min(values, default=0.0), max(values, default=1.0))
    width, height = 400, 260
    left = 14 + 7 * max(len(_label(tick)) for tick in y_ticks) + (18 if y_label else 0)
    right, top, bottom = 12, 46, 38
    plot_w, plot_h = width - left - right, height - top - bottom
    y_low, y_high = y_ticks[0], y_ticks[-1]
    x_low, x_high = (min(x), max(x)) if len(x) else (0, 1)
    if x_low == x_high:  # one epoch: its point in the middle
        x_low, x_high = x_low - 0.5, x_high + 0.5
    x_ticks = [t for t in nice_ticks(x_low, x_high, 6) if x_low <= t <= x_high and t == int(t)]

    def px(value: float) -> float:
        return left + (value - x_low) / (x_high - x_low) * plot_w

    def py(value: float) -> float:
        return top + (y_high - value) / (y_high - y_low) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" {FONT} font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" font-size="14" font-weight="600">{escape(title)}</text>',
    ]
    for tick in y_ticks:
        y = py(tick)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
            f"{_label(tick)}</text>"
        )
    for tick in x_ticks:
        xp = px(tick)
        parts.append(
            f'<line x1="{xp:.1f}" x2="{xp:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" '
            f'stroke="#555"/><text x="{xp:.1f}" y="{top + plot_h + 17}" text-anchor="middle" '
            f'fill="#555">{int(tick)}</text>'
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        f'stroke="#999"/>'
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" fill="#333">'
        f"{escape(x_label)}</text>"
    )
    if y_label:
        parts.append(
            f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" '
            f'text-anchor="middle" fill="#333">{escape(y_label)}</text>'
        )
    legend_x = left
    for index, (name, ys) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        points = [(px(a), py(b)) for a, b in zip(x, ys, strict=True) if math.isfinite(b)]
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
        if len(points) > 1:
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        radius = 3 if len(points) < 40 else 0
        parts += [
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{radius}" fill="{colour}"/>'
            for a, b in points
            if radius
        ]
        if len(series) > 1:
            parts.append(
                f'<rect x="{legend_x}" y="28" width="14" height="4" fill="{colour}"/>'
                f'<text x="{legend_x + 18}" y="34" fill="#333">{escape(name)}</text>'
            )
            legend_x += 28 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def heatmap(counts: np.ndarray, names: Sequence[str]) -> str:
    """An SVG confusion matrix: rows are true classes, columns predicted ones; each cell
    shows its count, shaded by its share of the row (the true class's images)."""
    classes = len(names)
    cell = max(18, min(44, 440 // max(classes, 1)))
    label_w = min(120, 12 + 7 * max((len(n) for n in names), default=1))
    top = label_w + 24
    left = label_w + 24
    size_w, size_h = left + classes * cell + 8, top + classes * cell + 8
    font = max(8, min(12, cell // 3))
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    worst = max((shares[i, j] for i in range(classes) for j in range(classes) if i != j), default=0)
    parts = [
        f'<svg class="heatmap" viewBox="0 0 {size_w} {size_h}" role="img" {FONT} '
        f'font-size="{font}" style="max-width:{size_w}px">',
        "<title>confusion matrix</title>",
        f'<text x="{left + classes * cell / 2}" y="12" text-anchor="middle" fill="#333">'
        "predicted class</text>",
        f'<text transform="translate(12 {top + classes * cell / 2}) rotate(-90)" '
        'text-anchor="middle" fill="#333">true class</text>',
    ]
    for i, name in enumerate(names):
        label = escape(_shorten(name, 16))
        parts.append(
            f'<text x="{left - 4}" y="{top + (i + 0.5) * cell + font / 3:.1f}" '
            f'text-anchor="end">{label}</text>'
            f'<text transform="translate({left + (i + 0.5) * cell + font / 3:.1f} {top - 4}) '
            f'rotate(-90)">{label}</text>'
        )
    for i in range(classes):
        for j in range(classes):
            share = float(shares[i, j])
            if i == j:
                fill, ink = _shade((0, 90, 160), share)
            else:  # mistakes: the most common one darkest
                fill, ink = _shade((200, 70, 20), math.sqrt(share / worst) if worst else 0)
            x, y = left + j * cell, top + i * cell
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                f'stroke="#fff"><title>true {escape(names[i])}, predicted {escape(names[j])}: '
                f"{counts[i, j]:,} ({share:.1%})</title></rect>"
            )
            if counts[i, j] and cell >= 20:
                parts.append(
                    f'<text x="{x + cell / 2}" y="{y + cell / 2 + font / 3:.1f}" '
                    f'text-anchor="middle" fill="{ink}">{_count(int(counts[i, j]))}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def _shade(target: tuple[int, int, int], strength: float) -> tuple[str, str]:
    """(fill, text colour): white blended towards ``target`` by ``strength`` (0 to 1)."""
    rgb = [round(255 + (t - 255) * strength) for t in target]
    return "#" + "".join(f"{c:02x}" for c in rgb), "#fff" if strength > 0.55 else "#222"


def _count(n: int) -> str:
    return f"{n / 1000:.0f}k" if n >= 10_000 else str(n)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
