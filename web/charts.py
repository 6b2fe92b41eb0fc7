"""Charts drawn on the server as inline SVG: no JavaScript, readable by screen readers, any width.

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` (named by
``aria-labelledby``) and a ``<title>`` on every bar and point, so a screen reader or a mouse-over
tells the value. The SVG scales to its container through its ``viewBox`` (no fixed pixel width),
so a chart never makes a phone page scroll sideways. Text is escaped: labels come from BPMN files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 480  # viewBox units; the SVG is as wide as its container (CSS caps it on wide screens)
FONT = 18  # viewBox units: about 12 px on a 375 px phone, 19 px at the CSS cap of 34rem
COLORS = ("#1d4ed8", "#d97706", "#05400a", "#b42318")  # blue, amber, green, red: apart in greyscale too
DASHES = ("", "8 5", "2 4", "12 4 2 4")  # and each line its own dash pattern, not only a colour


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _frame(chart_id: str, title: str, description: str, height: int, body: list[str], css: str) -> Markup:
    head = (
        f'<svg class="chart {escape(css)}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" '
        f'font-size="{FONT}" preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>'
        f'<desc id="{escape(chart_id)}-desc">{escape(description)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def bar_chart(
    bars: Sequence[tuple[str, float | None]],
    *,
    chart_id: str,
    title: str,
    description: str = "",
    value_label: Callable[[float], str] = _number,
    color: str = COLORS[0],
) -> Markup:
    """Horizontal bars, one per (label, value), the label above its bar (long names fit on phones);
    a value of None draws no bar and says "–"."""
    row, bar = FONT * 3, FONT
    height = max(len(bars), 1) * row + FONT // 2
    top = max((v for _, v in bars if v is not None), default=0) or 1
    texts = [value_label(value) if value is not None else "–" for _, value in bars]
    label_room = max((_text_width(t) for t in texts), default=0) + 12  # the value is written after the bar
    body: list[str] = []
    for index, ((label, value), text) in enumerate(zip(bars, texts, strict=True)):
        y = index * row + FONT + 2
        length = 0.0 if value is None else max((WIDTH - label_room) * value / top, 1.0 if value else 0.0)
        body.append(
            f'<g class="bar"><title>{escape(label)}: {escape(text)}</title>'
            f'<text x="0" y="{y}" fill="#1f2933">{escape(label)}</text>'
            f'<rect x="0" y="{y + 6}" width="{length:.1f}" height="{bar}" rx="3" fill="{escape(color)}"/>'
            f'<text x="{length + 8:.1f}" y="{y + 6 + bar - 3}" fill="#52606d">{escape(text)}</text></g>'
        )
    if not bars:
        body.append(f'<text x="0" y="{FONT}" fill="#52606d">–</text>')
    return _frame(chart_id, title, description, height, body, "bar-chart")


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    chart_id: str,
    title: str,
    description: str = "",
) -> Markup:
    """One line per series over the same x labels (days, weeks), a legend, and the y scale's top."""
    height, left, right, top_pad = 300, 48, 12, FONT * 2 + 8
    bottom = height - FONT * 2
    plot_w = WIDTH - left - right
    peak = max((v for s in series for v in s.values), default=0)
    ceiling = _nice(peak)
    count = len(labels)

    def x(i: int) -> float:
        return left + (plot_w * i / (count - 1) if count > 1 else plot_w / 2)

    def y(v: float) -> float:
        return bottom - (bottom - top_pad) * v / ceiling

    body: list[str] = []
    for fraction in (0, 0.5, 1):  # grid lines and the scale
        value = ceiling * fraction
        body.append(
            f'<line x1="{left}" x2="{WIDTH - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="#d9e2ec"/><text x="{left - 6}" y="{y(value) + FONT / 3:.1f}" text-anchor="end" '
            f'fill="#52606d">{escape(_number(value))}</text>'
        )
    shown = sorted({0, count // 2, count - 1}) if count else []
    for i in shown:  # first, middle and last label: enough to read the time axis on a phone
        anchor = "start" if i == 0 and count > 1 else ("end" if i == count - 1 and count > 1 else "middle")
        body.append(
            f'<text x="{x(i):.1f}" y="{height - 6}" text-anchor="{anchor}" fill="#52606d">'
            f"{escape(labels[i])}</text>"
        )
    legend_x = float(left)
    for n, s in enumerate(series):
        color, dash = COLORS[n % len(COLORS)], DASHES[n % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        body.append(
            f'<line x1="{legend_x:.1f}" x2="{legend_x + 28:.1f}" y1="{FONT * 0.7:.1f}" y2="{FONT * 0.7:.1f}" '
            f'stroke="{color}" stroke-width="3"{dash_attr}/><text x="{legend_x + 34:.1f}" y="{FONT}" '
            f'fill="#1f2933">{escape(s.name)}</text>'
        )
        legend_x += 34 + _text_width(s.name) + FONT
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))
        if count > 1:
            body.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2.5"{dash_attr} points="{points}"/>'
            )
        for i, v in enumerate(s.values):
            body.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="{3.5 if count <= 45 else 2}" fill="{color}">'
                f"<title>{escape(s.name)} · {escape(labels[i])}: {escape(_number(v))}</title></circle>"
            )
    return _frame(chart_id, title, description, height, body, "line-chart")


def _text_width(text: str) -> float:
    """About how wide ``text`` is drawn: CJK characters are square, Latin ones narrower."""
    return sum(FONT if ord(c) >= 0x2E80 else FONT * 0.6 for c in text)


def _nice(peak: float) -> float:
    """A round top for the y scale at or above ``peak`` (1, 2, 5 times a power of ten)."""
    if peak <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(peak))) - 1) if peak >= 1 else 1
    for step in (1, 2, 5, 10):
        if peak <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)
