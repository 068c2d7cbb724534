"""The ``model_bundle`` heatmap: the holdout metric per (window x cohort), this update outlined.

Written as SVG text by hand rather than drawn with matplotlib: the chart is rectangles, labels
and a colour bar, and a bundle step that imports matplotlib and rasterizes a figure pays ~0.3-0.8 s
per update (more on a cold disk), which is most of a one-partition update's bundle step. The SVG
goes into the metadata as markdown with a ``data:`` image, which the Dagster UI renders (its
markdown sanitizer allows the ``data`` protocol for image sources); it scales without blur.
Every cell carries a ``<title>`` (window, cohort, value): a tooltip when the SVG is opened alone.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Collection, Mapping, Sequence
from xml.sax.saxutils import escape

from retrain_plugins.partitions import PartitionKey

RETRAINED_COLOR, REJECTED_COLOR, MISSING_COLOR = "#e4002b", "#ff9f1c", "#d9d9d9"
# viridis at nine even stops (worse -> better), interpolated linearly between them
VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21908c", "#27ad81", "#5dc863", "#aadc32", "#fde725")
MIN_WIDTH, MAX_PLOT_WIDTH, MAX_PLOT_HEIGHT = 760, 1100, 640
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def _every(labels: Sequence[str], room: int) -> list[int]:
    """Indices of the tick labels to show: all when they fit in ``room``, else evenly thinned."""
    step = max(1, -(-len(labels) // max(room, 1)))
    return list(range(0, len(labels), step))


def colour(t: float) -> str:
    """The viridis colour at ``t`` in [0, 1] (0 worst, 1 best)."""
    t = min(1.0, max(0.0, t)) * (len(VIRIDIS) - 1)
    i = min(int(t), len(VIRIDIS) - 2)
    a, b = (tuple(int(h[k : k + 2], 16) for k in (1, 3, 5)) for h in VIRIDIS[i : i + 2])
    return "#" + "".join(f"{round(x + (y - x) * (t - i)):02x}" for x, y in zip(a, b))


def heatmap_svg(
    values: Mapping[PartitionKey, float | None],
    windows: Sequence[str],
    cohorts: Sequence[str],
    metric: str,
    higher_is_better: bool,
    retrained: Collection[PartitionKey] = (),
    rejected: Collection[PartitionKey] = (),
    title: str = "",
) -> str:
    """An SVG heatmap of ``values`` (windows as columns, cohorts as rows; grey: no sub-model).

    ``retrained`` cells are outlined solid, ``rejected`` ones (the gate kept the current model)
    dashed. The colour scale runs from worse to better whatever the metric's direction (AUC up,
    logloss and RMSE down), so better is always the same colour (yellow).
    """
    col = {w: j for j, w in enumerate(windows)}
    row = {c: i for i, c in enumerate(cohorts)}
    cells = {k: v for k, v in values.items() if k.window in col and k.cohort in row}
    finite = [v for v in cells.values() if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5

    def goodness(value: float) -> float:
        t = (value - lo) / (hi - lo)
        return t if higher_is_better else 1 - t

    cw = min(60.0, max(12.0, MAX_PLOT_WIDTH / max(len(windows), 1)))
    ch = min(34.0, max(10.0, MAX_PLOT_HEIGHT / max(len(cohorts), 1)))
    titles = title.splitlines()
    left = 24 + 6.5 * min(32, max((len(c) for c in cohorts), default=4))
    top = 16 + 17 * len(titles)
    plot_w, plot_h = cw * len(windows), ch * len(cohorts)
    bar_x = left + plot_w + 24
    width = max(MIN_WIDTH, bar_x + 120)
    label_room = 10 + 5.2 * min(24, max((len(w) for w in windows), default=4))
    height = top + plot_h + label_room + 56
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" {FONT} font-size="11">',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
    ]
    for i, line in enumerate(titles):
        out.append(f'<text x="{width / 2:.1f}" y="{18 + 17 * i}" text-anchor="middle" font-size="13">{escape(line)}</text>')

    annotate = len(windows) <= 24 and len(cohorts) <= 24 and cw >= 34
    for key, value in sorted(cells.items()):
        x, y = left + col[key.window] * cw, top + row[key.cohort] * ch
        known = value is not None and math.isfinite(value)
        fill = colour(goodness(value)) if known else MISSING_COLOR
        shown = f"{value:.3f}" if known else "no sub-model"
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{cw:.1f}" height="{ch:.1f}" fill="{fill}">'
            f"<title>{escape(f'{key.window} | {key.cohort}: {metric} {shown}')}</title></rect>"
        )
        if annotate and known:
            ink = "white" if goodness(value) < 0.5 else "black"  # viridis is dark at its worse end
            out.append(
                f'<text x="{x + cw / 2:.1f}" y="{y + ch / 2 + 3.5:.1f}" text-anchor="middle" font-size="9" fill="{ink}">{shown}</text>'
            )
    for keys, stroke, dash in ((retrained, RETRAINED_COLOR, ""), (rejected, REJECTED_COLOR, ' stroke-dasharray="5 3"')):
        for key in sorted(k for k in keys if k.window in col and k.cohort in row):
            x, y = left + col[key.window] * cw, top + row[key.cohort] * ch
            out.append(
                f'<rect class="outline" x="{x + 1.3:.1f}" y="{y + 1.3:.1f}" width="{cw - 2.6:.1f}" height="{ch - 2.6:.1f}" '
                f'fill="none" stroke="{stroke}" stroke-width="2.6"{dash}/>'
            )

    for j in _every(windows, int(plot_w / 14)):  # window labels, rotated, under their column
        x, y = left + (j + 0.5) * cw, top + plot_h + 8
        out.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="end" font-size="9" transform="rotate(-45 {x:.1f} {y:.1f})">{escape(windows[j])}</text>'
        )
    for i in _every(cohorts, int(plot_h / 11)):
        y = top + (i + 0.5) * ch + 3.5
        out.append(f'<text x="{left - 6:.1f}" y="{y:.1f}" text-anchor="end" font-size="9">{escape(cohorts[i][:40])}</text>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + label_room + 6:.1f}" text-anchor="middle">window</text>')
    out.append(f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" transform="rotate(-90 12 {top + plot_h / 2:.1f})">cohort</text>')

    # the colour bar: better at the top, the metric's values at both ends
    stops = "".join(f'<stop offset="{k / (len(VIRIDIS) - 1):.3f}" stop-color="{c}"/>' for k, c in enumerate(reversed(VIRIDIS)))
    best, worst = (hi, lo) if higher_is_better else (lo, hi)
    direction = "higher is better" if higher_is_better else "lower is better"
    out += [
        f'<defs><linearGradient id="scale" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>',
        f'<rect x="{bar_x:.1f}" y="{top:.1f}" width="14" height="{plot_h:.1f}" fill="url(#scale)"/>',
        f'<text x="{bar_x + 18:.1f}" y="{top + 9:.1f}" font-size="9">{best:.3f}</text>',
        f'<text x="{bar_x + 18:.1f}" y="{top + plot_h:.1f}" font-size="9">{worst:.3f}</text>',
        f'<text x="{bar_x + 18:.1f}" y="{top + plot_h / 2:.1f}" font-size="9">{escape(f"holdout {metric}")}</text>',
        f'<text x="{bar_x + 18:.1f}" y="{top + plot_h / 2 + 12:.1f}" font-size="9">({direction})</text>',
    ]

    legend_y = height - 18
    entries = (
        (f'fill="none" stroke="{RETRAINED_COLOR}" stroke-width="2"', f"retrained this update ({len(retrained)})"),
        (f'fill="none" stroke="{REJECTED_COLOR}" stroke-width="2" stroke-dasharray="4 2"', f"rejected by the gate ({len(rejected)})"),
        (f'fill="{MISSING_COLOR}"', "no sub-model"),
    )
    x = width / 2 - 270
    for style, text in entries:
        out.append(f'<rect x="{x:.1f}" y="{legend_y - 9:.1f}" width="14" height="10" {style}/>')
        out.append(f'<text x="{x + 20:.1f}" y="{legend_y:.1f}">{escape(text)}</text>')
        x += 200
    out.append("</svg>")
    return "\n".join(out)


def image_markdown(svg: str, alt: str) -> str:
    """Markdown showing ``svg`` inline (a ``data:`` URL: no file the webserver must serve)."""
    encoded = base64.b64encode(svg.encode()).decode("ascii")
    return f"![{alt}](data:image/svg+xml;base64,{encoded})"

