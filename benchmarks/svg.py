"""Two small SVG chart writers (grouped bars, lines), so the report needs no plotting library."""

from __future__ import annotations

from html import escape
from typing import Sequence

W, H = 720, 360
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 70
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** len(str(int(v))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * mag:
            return step * mag
    return 10 * mag


def _tick(v: float, span: float) -> str:
    return f"{v:.0f}" if span >= 10 else f"{v:.1f}" if span >= 1 else f"{v:.3g}"


def _frame(title: str, ymax: float, ylabel: str) -> list[str]:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
           f'<text x="14" y="{TOP + (H - TOP - BOTTOM) / 2}" transform="rotate(-90 14 {TOP + (H - TOP - BOTTOM) / 2})" '
           f'text-anchor="middle">{escape(ylabel)}</text>']
    for i in range(6):
        v = ymax * i / 5
        y = H - BOTTOM - (H - TOP - BOTTOM) * i / 5
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    return out


def _legend(names: Sequence[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        x = LEFT + i * 160
        out.append(f'<rect x="{x}" y="{H - 22}" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>')
        out.append(f'<text x="{x + 14}" y="{H - 13}">{escape(name)}</text>')
    return out


def bar_chart(title: str, groups: Sequence[str], series: dict[str, Sequence[float]], ylabel: str) -> str:
    """Grouped bars: one group per label, one bar per series."""
    ymax = _nice_max(max((v for vals in series.values() for v in vals), default=1.0))
    out = _frame(title, ymax, ylabel)
    plot_w = W - LEFT - RIGHT
    gw = plot_w / max(1, len(groups))
    bw = gw * 0.8 / max(1, len(series))
    for gi, label in enumerate(groups):
        gx = LEFT + gi * gw + gw * 0.1
        for si, (_, vals) in enumerate(series.items()):
            v = vals[gi]
            h = (H - TOP - BOTTOM) * v / ymax
            x = gx + si * bw
            out.append(f'<rect x="{x:.1f}" y="{H - BOTTOM - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                       f'fill="{COLORS[si % len(COLORS)]}"><title>{v:g}</title></rect>')
        out.append(f'<text x="{gx + gw * 0.4:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{escape(label)}</text>')
    out += _legend(list(series))
    out.append("</svg>")
    return "\n".join(out)


def line_chart(title: str, series: dict[str, Sequence[tuple[float, float]]], xlabel: str, ylabel: str) -> str:
    """Lines over a shared x axis (e.g. seconds)."""
    xs = [x for pts in series.values() for x, _ in pts] or [0.0, 1.0]
    ys = [y for pts in series.values() for _, y in pts] or [1.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ymax = _nice_max(max(ys))
    out = _frame(title, ymax, ylabel)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    for i in range(6):
        x = LEFT + pw * i / 5
        out.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{_tick(x0 + (x1 - x0) * i / 5, x1 - x0)}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - BOTTOM + 30}" text-anchor="middle">{escape(xlabel)}</text>')
    for si, (_, pts) in enumerate(series.items()):
        coords = " ".join(f"{LEFT + pw * (x - x0) / (x1 - x0):.1f},{H - BOTTOM - ph * y / ymax:.1f}" for x, y in pts)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{COLORS[si % len(COLORS)]}" stroke-width="1.5"/>')
    out += _legend(list(series))
    out.append("</svg>")
    return "\n".join(out)
