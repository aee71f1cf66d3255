"""SVG charts drawn on the server (no JavaScript, no chart library): the weekday x hour
heatmap, ranked bars with a goal line, a day timeline against threshold bands, and a
goal meter. Colour-blind-safe palettes (viridis, Okabe-Ito) and every value also as text."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from fleet_server.web.i18n import Formatter

# viridis, light (low) to dark (high): readable by the common colour-vision deficiencies
# and in greyscale print-outs.
VIRIDIS = ("#fde725", "#b5de2b", "#6ece58", "#35b779", "#1f9e89", "#26828e", "#31688e", "#3e4989", "#482878",
           "#440154")
# Okabe-Ito qualitative colours (Okabe & Ito 2008, "Color Universal Design").
BLUE, VERMILLION, ORANGE, SKY, GREEN, YELLOW, GREY = ("#0072B2", "#D55E00", "#E69F00", "#56B4E9",
                                                      "#009E73", "#F0E442", "#999999")


def _svg(width: int, height: int, title: str, body: list[str], cls: str = "chart") -> Markup:
    # The title is both the accessible name and the hover text of the whole figure.
    return Markup(f'<svg class="{cls}" viewBox="0 0 {width} {height}" role="img" '
                  f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
                  f'<title>{escape(title)}</title>{"".join(body)}</svg>')


def seq_colour(share: float) -> tuple[str, str]:
    """(fill, text colour) for a share 0..1 on the viridis scale."""
    i = min(len(VIRIDIS) - 1, max(0, int(share * len(VIRIDIS))))
    return VIRIDIS[i], ("#000" if i < 5 else "#fff")


def heatmap(cells: Sequence[dict], fmt: Formatter, *, hours: range, weekdays: Sequence[int],
            title: str) -> Markup:
    """Weekday rows x hour columns; each cell shows its utilisation in % as text too."""
    by_key = {(c["weekday"], c["hour"]): c for c in cells}
    cw, ch, left, top = 44, 30, 52, 22
    width, height = left + cw * len(hours) + 4, top + ch * len(weekdays) + 4
    body = []
    for j, hour in enumerate(hours):
        body.append(f'<text x="{left + j * cw + cw / 2}" y="15" text-anchor="middle" class="axis">{hour:02d}</text>')
    for i, wd in enumerate(weekdays):
        y = top + i * ch
        body.append(f'<text x="{left - 6}" y="{y + ch / 2 + 4}" text-anchor="end" class="axis">'
                    f'{escape(fmt.weekday(wd))}</text>')
        for j, hour in enumerate(hours):
            x = left + j * cw
            c = by_key.get((wd, hour))
            if c is None or c["utilisation"] is None:
                body.append(f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" class="empty">'
                            f'<title>{escape(fmt.weekday(wd))} {hour:02d}:00 {escape(fmt.t("no_data"))}</title></rect>')
                continue
            fill, ink = seq_colour(c["utilisation"])
            tip = (f'{fmt.weekday(wd)} {hour:02d}:00–{hour + 1:02d}:00: {fmt.pct(c["utilisation"])} '
                   f'({fmt.num(c["occupied_minutes"])} / {fmt.num(c["observed_minutes"])} {fmt.t("minutes")})')
            body.append(f'<g data-figure="heatmap.{wd}.{hour}" data-value="{c["utilisation"]}">'
                        f'<rect x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{fill}">'
                        f'<title>{escape(tip)}</title></rect>'
                        f'<text x="{x + (cw - 2) / 2}" y="{y + ch / 2 + 3}" text-anchor="middle" fill="{ink}" '
                        f'class="cell">{round(c["utilisation"] * 100)}</text></g>')
    return _svg(width, height, title, body)


def heatmap_legend(fmt: Formatter) -> Markup:
    body = []
    for i, colour in enumerate(VIRIDIS):
        body.append(f'<rect x="{i * 26}" y="0" width="26" height="12" fill="{colour}"/>')
    body.append('<text x="0" y="26" class="axis">0%</text>')
    body.append(f'<text x="{26 * len(VIRIDIS)}" y="26" text-anchor="end" class="axis">100%</text>')
    return _svg(26 * len(VIRIDIS), 30, fmt.t("utilisation"), body, cls="legend")


@dataclass(frozen=True)
class Bar:
    label: str
    value: float | None         # a share 0..1
    figure: str                 # data-figure id the tests read
    href: str | None = None
    note: str = ""


def ranked_bars(bars: Sequence[Bar], fmt: Formatter, *, title: str, goal: float | None = None) -> Markup:
    """Horizontal bars, one per row in the given order, value as text beside each; an
    optional dashed goal line (e.g. the 95% coverage goal) labelled with its value."""
    row, left, bar_w, top = 24, 190, 300, 20 if goal is not None else 4
    height = top + row * max(1, len(bars)) + 6
    body = []
    if goal is not None:
        gx = left + goal * bar_w
        body.append(f'<line x1="{gx}" y1="{top - 6}" x2="{gx}" y2="{height - 2}" class="goal"/>'
                    f'<text x="{gx}" y="{top - 9}" text-anchor="middle" class="axis goal-label">'
                    f'{escape(fmt.t("goal"))} {fmt.pct(goal, 0)}</text>')
    for i, b in enumerate(bars):
        y = top + i * row
        label = escape(b.label if len(b.label) <= 16 else b.label[:15] + "…")
        text = f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" class="label">{label}</text>'
        if b.href:
            text = f'<a href="{escape(b.href)}">{text}</a>'
        body.append(text)
        if b.value is None:
            body.append(f'<text x="{left + 4}" y="{y + 15}" class="axis">{escape(fmt.t("no_data"))}</text>')
            continue
        w = max(1.0, min(1.0, b.value) * bar_w)
        below_goal = goal is not None and b.value < goal
        # Below the goal: orange with a hatch, at or above: blue; the text says it too.
        fill = "url(#hatch)" if below_goal else BLUE
        body.append(f'<g data-figure="{escape(b.figure)}" data-value="{b.value}">'
                    f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" fill="{fill}" '
                    f'class="{"below" if below_goal else "bar"}"><title>{label}: {fmt.pct(b.value)}'
                    f'{escape(b.note)}</title></rect>'
                    f'<text x="{left + w + 5:.1f}" y="{y + 15}" class="value">{fmt.pct(b.value)}'
                    f'{escape(b.note)}</text></g>')
    defs = (f'<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
            f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{ORANGE}"/>'
            f'<line x1="0" y1="0" x2="0" y2="6" stroke="#7a4a00" stroke-width="2"/></pattern></defs>')
    return _svg(left + bar_w + 90, height, title, [defs] + body)


@dataclass(frozen=True)
class Band:
    low: float | None           # None: the bottom of the chart
    high: float | None          # None: the top
    css: str                    # ok / notice / breach
    label: str


def timeline(points: Sequence[tuple[float, float]], fmt: Formatter, *, title: str, start_s: float,
             end_s: float, y_min: float, y_max: float, unit: str, bands: Sequence[Band] = (),
             lines: Sequence[tuple[float, str]] = ()) -> Markup:
    """A value over the school-local day: points (seconds since midnight, value),
    shaded threshold bands with their labels, threshold lines, hour ticks."""
    width, height, left, right, top, bottom = 680, 150, 46, 110, 8, 22
    pw, ph = width - left - right, height - top - bottom
    span = max(1.0, end_s - start_s)
    y_span = max(1e-9, y_max - y_min)

    def x(t: float) -> float:
        return left + (t - start_s) / span * pw

    def y(v: float) -> float:
        return top + ph - (min(max(v, y_min), y_max) - y_min) / y_span * ph

    body = []
    for b in bands:
        hi = y(b.high if b.high is not None else y_max)
        lo = y(b.low if b.low is not None else y_min)
        body.append(f'<rect x="{left}" y="{hi:.1f}" width="{pw}" height="{max(0, lo - hi):.1f}" class="band-{b.css}"/>'
                    f'<text x="{left + pw + 4}" y="{(hi + lo) / 2 + 4:.1f}" class="axis">{escape(b.label)}</text>')
    for value, label in lines:
        body.append(f'<line x1="{left}" y1="{y(value):.1f}" x2="{left + pw}" y2="{y(value):.1f}" class="threshold"/>'
                    f'<text x="{left + pw + 4}" y="{y(value) + 4:.1f}" class="axis">{escape(label)}</text>')
    first_hour, last_hour = int(start_s // 3600), int(end_s // 3600)
    for hour in range(first_hour, last_hour + 1):
        tx = x(hour * 3600)
        body.append(f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{top + ph}" class="grid"/>'
                    f'<text x="{tx:.1f}" y="{height - 6}" text-anchor="middle" class="axis">{hour:02d}</text>')
    body.append(f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="axis">{fmt.num(y_max)}</text>'
                f'<text x="{left - 4}" y="{top + ph}" text-anchor="end" class="axis">{fmt.num(y_min)}</text>'
                f'<text x="2" y="{top + ph / 2}" class="axis">{escape(unit)}</text>')
    if points:
        # A gap of more than 3 windows breaks the line: missing data is not drawn as data.
        segments: list[list[tuple[float, float]]] = [[]]
        for i, (t, v) in enumerate(points):
            if i and t - points[i - 1][0] > 180:
                segments.append([])
            segments[-1].append((t, v))
        for seg in segments:
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in seg)
            body.append(f'<polyline points="{path}" class="series"/>')
    else:
        body.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" class="axis">'
                    f'{escape(fmt.t("no_data"))}</text>')
    return _svg(width, height, title, body, cls="chart timeline")


def presence_strip(spans: Sequence[tuple[float, float, float]], fmt: Formatter, *, title: str,
                   start_s: float, end_s: float) -> Markup:
    """Occupied share per window as a strip: dark = occupied, light = vacant, blank = no
    window; spans are (start s since midnight, length s, occupied share)."""
    width, height, left, right = 680, 40, 46, 110
    pw = width - left - right
    span = max(1.0, end_s - start_s)
    body = [f'<rect x="{left}" y="4" width="{pw}" height="18" class="empty"/>']
    for t, length, share in spans:
        if t + length <= start_s or t >= end_s:
            continue
        x0 = left + (max(t, start_s) - start_s) / span * pw
        w = max(0.6, min(length, end_s - t) / span * pw)
        body.append(f'<rect x="{x0:.1f}" y="4" width="{w:.2f}" height="18" '
                    f'class="{"occ" if share >= 0.5 else "vac"}"/>')
    for hour in range(int(start_s // 3600), int(end_s // 3600) + 1):
        tx = left + (hour * 3600 - start_s) / span * pw
        body.append(f'<text x="{tx:.1f}" y="36" text-anchor="middle" class="axis">{hour:02d}</text>')
    body.append(f'<text x="{left + pw + 4}" y="12" class="axis occ-key">■ {escape(fmt.t("present"))}</text>'
                f'<text x="{left + pw + 4}" y="26" class="axis vac-key">□ {escape(fmt.t("vacant"))}</text>')
    return _svg(width, height, title, body, cls="chart strip")


def meter(value: float, goal: float, fmt: Formatter, *, title: str, figure: str, as_share: bool) -> Markup:
    """Progress against a goal (coverage vs 95%, live new-style spaces vs 1000)."""
    width, height, left, pw = 420, 38, 4, 330
    scale = max(goal, value) if not as_share else 1.0
    vx = left + min(value / scale, 1.0) * pw if scale else left
    gx = left + goal / scale * pw if scale else left
    shown = fmt.pct(value) if as_share else fmt.num(value)
    goal_text = fmt.pct(goal, 0) if as_share else fmt.num(goal)
    body = [f'<rect x="{left}" y="6" width="{pw}" height="16" class="empty"/>',
            f'<g data-figure="{escape(figure)}" data-value="{value}"><rect x="{left}" y="6" width="{vx - left:.1f}" '
            f'height="16" fill="{BLUE}"/><text x="{left + pw + 6}" y="19" class="value">{shown}</text></g>',
            f'<line x1="{gx:.1f}" y1="2" x2="{gx:.1f}" y2="26" class="goal"/>',
            f'<text x="{gx:.1f}" y="36" text-anchor="middle" class="axis goal-label">{escape(fmt.t("goal"))} '
            f'{goal_text}</text>']
    return _svg(width, height, title, body, cls="chart meter")


@dataclass(frozen=True)
class TrendPoint:
    label: str                  # the x label (an ISO week, 2026-W16)
    value: float | None         # a share 0..1; None: no school day that week (a gap)
    figure: str                 # data-figure id the tests read
    note: str = ""              # appended to the hover text, e.g. " (12/40)"


def trend(points: Sequence[TrendPoint], fmt: Formatter, *, title: str, goal: float | None = None) -> Markup:
    """A share over consecutive periods (oldest left): a line through the points, each
    point with its value printed above it, a dashed goal line with its value; a period
    without a value breaks the line and says "no data". Under the goal a point is a
    hollow diamond, at or over it a filled circle, so shape tells it, not colour alone."""
    width, height, left, right, top, bottom = 680, 180, 46, 70, 18, 36
    pw, ph = width - left - right, height - top - bottom
    step = pw / max(1, len(points))

    def x(i: int) -> float:
        return left + (i + 0.5) * step

    def y(v: float) -> float:
        return top + ph - min(max(v, 0.0), 1.0) * ph

    body = []
    for share in (0.0, 0.5, 1.0):
        body.append(f'<line x1="{left}" y1="{y(share):.1f}" x2="{left + pw}" y2="{y(share):.1f}" class="grid"/>'
                    f'<text x="{left - 4}" y="{y(share) + 4:.1f}" text-anchor="end" class="axis">'
                    f'{fmt.pct(share, 0)}</text>')
    if goal is not None:
        body.append(f'<line x1="{left}" y1="{y(goal):.1f}" x2="{left + pw}" y2="{y(goal):.1f}" class="goal"/>'
                    f'<text x="{left + pw + 4}" y="{y(goal) + 4:.1f}" class="axis goal-label">'
                    f'{escape(fmt.t("goal"))} {fmt.pct(goal, 0)}</text>')
    segments: list[list[str]] = [[]]
    for i, p in enumerate(points):
        if p.value is None:
            segments.append([])
        else:
            segments[-1].append(f"{x(i):.1f},{y(p.value):.1f}")
    for seg in segments:
        if len(seg) > 1:
            body.append(f'<polyline points="{" ".join(seg)}" class="series"/>')
    # Every other x label when crowded; the week is in each point's hover text anyway.
    every = 1 if len(points) <= 13 else 2
    for i, p in enumerate(points):
        label = escape(p.label)
        if i % every == 0 or i == len(points) - 1:
            body.append(f'<text x="{x(i):.1f}" y="{height - 20}" text-anchor="middle" class="axis">'
                        f'{escape(p.label[-3:])}</text>')
        if p.value is None:
            body.append(f'<text x="{x(i):.1f}" y="{top + ph / 2:.1f}" text-anchor="middle" class="axis">'
                        f'<title>{label}: {escape(fmt.t("no_data"))}</title>–</text>')
            continue
        px, py = x(i), y(p.value)
        tip = f'{label}: {fmt.pct(p.value)}{escape(p.note)}'
        if goal is not None and p.value < goal:
            marker = (f'<path d="M{px:.1f},{py - 5:.1f} L{px + 5:.1f},{py:.1f} L{px:.1f},{py + 5:.1f} '
                      f'L{px - 5:.1f},{py:.1f} Z" fill="#fff" stroke="{VERMILLION}" stroke-width="2" class="below">'
                      f'<title>{tip}</title></path>')
        else:
            marker = f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4.5" fill="{BLUE}" class="point"><title>{tip}</title></circle>'
        body.append(f'<g data-figure="{escape(p.figure)}" data-value="{p.value}">{marker}'
                    f'<text x="{px:.1f}" y="{py - 8:.1f}" text-anchor="middle" class="value">'
                    f'{fmt.pct(p.value, 0)}</text></g>')
    if points:
        first, last = escape(points[0].label), escape(points[-1].label)
        body.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle" class="axis">'
                    f'{first} – {last}</text>')
    return _svg(width, height, title, body, cls="chart trend")
