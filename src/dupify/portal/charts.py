"""Server-rendered SVG charts for the dashboard: the geometry of bars and lines per day, with
whole-number axes and a value for every point (shown on hover and on keyboard focus).

The templates draw what these dataclasses say; no chart script runs in the browser, and every
chart has a table of the same figures beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

WIDTH = 560
HEIGHT = 220
LEFT = 52
RIGHT = 8
TOP = 10
BOTTOM = 30
TICKS = 4


@dataclass(frozen=True)
class Series:
    name: str  # shown in the legend and the tip: "requests"
    css: str  # the colour class: s1, s2, ...
    values: Sequence[float | None]  # one per day; None: no value that day (no line point)
    unit: str = ""


@dataclass(frozen=True)
class Mark:
    """One value: a bar (width > 0) or a line point (width 0), and its tip."""

    x: float
    y: float
    width: float
    height: float
    css: str
    tip: str
    tip_x: float
    tip_y: float


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    kind: str  # bars | lines
    width: int
    height: int
    series: list[Series]
    marks: list[Mark]
    lines: list[tuple[str, str]]  # css, SVG points for a polyline
    ticks: list[tuple[float, str]]  # y, label
    day_labels: list[tuple[float, str]]  # x, label
    plot_left: int
    plot_right: int
    day_count: int


def nice_step(largest: float, ticks: int = TICKS) -> float:
    """A step of 1, 2 or 5 times a power of ten (at least 1) so `ticks` steps reach `largest`."""
    if largest <= 0:
        return 1.0
    raw = largest / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return max(1.0, factor * magnitude)
    return max(1.0, 10 * magnitude)


def _label(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _day_labels(days: Sequence[date], x_of: list[float]) -> list[tuple[float, str]]:
    every = max(1, math.ceil(len(days) / 6))
    return [
        (round(x_of[index], 1), day.strftime("%b %d"))
        for index, day in enumerate(days)
        if index % every == 0
    ]


def chart(
    chart_id: str, title: str, days: Sequence[date], series: Sequence[Series], kind: str = "bars"
) -> Chart:
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    largest = max([0.0, *(v for s in series for v in s.values if v is not None)])
    step = nice_step(largest)
    top = step * TICKS
    slot = plot_width / max(1, len(days))
    centres = [LEFT + slot * (index + 0.5) for index in range(len(days))]

    def y_of(value: float) -> float:
        return round(TOP + plot_height - plot_height * value / top, 1)

    marks: list[Mark] = []
    lines: list[tuple[str, str]] = []
    bar_width = max(1.0, slot * 0.8 / max(1, len(series))) if kind == "bars" else 0.0
    for number, one in enumerate(series):
        points = []
        for index, value in enumerate(one.values):
            day = days[index].isoformat()
            shown = "no requests" if value is None else f"{_label(value)}{one.unit} {one.name}"
            if kind == "bars":
                x = centres[index] - slot * 0.4 + number * bar_width
                y = y_of(value or 0)
                height = round(TOP + plot_height - y, 1)
                marks.append(
                    Mark(
                        round(x, 1), y, round(bar_width, 1), height, one.css,
                        f"{day}: {shown}", round(x + bar_width / 2, 1), max(TOP + 12, y - 6),
                    )
                )  # fmt: skip
            elif value is not None:
                x, y = round(centres[index], 1), y_of(value)
                points.append(f"{x},{y}")
                marks.append(Mark(x, y, 0, 0, one.css, f"{day}: {shown}", x, max(TOP + 12, y - 8)))
        if points:
            lines.append((one.css, " ".join(points)))
    ticks = [(y_of(step * k), _label(step * k)) for k in range(TICKS + 1)]
    return Chart(
        id=chart_id,
        title=title,
        kind=kind,
        width=WIDTH,
        height=HEIGHT,
        series=list(series),
        marks=marks,
        lines=lines,
        ticks=ticks,
        day_labels=_day_labels(days, centres),
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
        day_count=len(days),
    )
