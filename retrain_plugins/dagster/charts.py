"""The ``model_bundle`` heatmap: the holdout metric per (window x cohort), this update outlined.

Rendered with matplotlib's object API on the Agg canvas (no pyplot, no global state, no display),
imported only when a bundle is published: matplotlib is installed with CatBoost. The PNG goes into
the metadata as markdown with a ``data:`` image, which the Dagster UI renders (its markdown
sanitizer allows the ``data`` protocol for image sources).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Collection, Mapping, Sequence

from retrain_plugins.partitions import PartitionKey

MAX_WIDTH_IN, MAX_HEIGHT_IN = 14.0, 9.0
RETRAINED_COLOR, REJECTED_COLOR = "#e4002b", "#ff9f1c"


def _every(labels: Sequence[str], room: int) -> list[int]:
    """Indices of the tick labels to show: all when they fit in ``room``, else evenly thinned."""
    step = max(1, -(-len(labels) // room))
    return list(range(0, len(labels), step))


def heatmap_png(
    values: Mapping[PartitionKey, float | None],
    windows: Sequence[str],
    cohorts: Sequence[str],
    metric: str,
    higher_is_better: bool,
    retrained: Collection[PartitionKey] = (),
    rejected: Collection[PartitionKey] = (),
    title: str = "",
) -> bytes:
    """A PNG heatmap of ``values`` (windows as columns, cohorts as rows; grey: no sub-model).

    ``retrained`` cells are outlined solid, ``rejected`` ones (the gate kept the current model)
    dashed. The colour scale runs from worse to better whatever the metric's direction (AUC up,
    logloss and RMSE down), so better is always the same colour.
    """
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    col = {w: j for j, w in enumerate(windows)}
    row = {c: i for i, c in enumerate(cohorts)}
    grid = np.full((len(cohorts), len(windows)), np.nan)
    for key, value in values.items():
        if value is not None and key.window in col and key.cohort in row:
            grid[row[key.cohort], col[key.window]] = value

    width = min(MAX_WIDTH_IN, max(7.5, 3.0 + 0.55 * len(windows)))
    height = min(MAX_HEIGHT_IN, max(3.6, 2.2 + 0.42 * len(cohorts)))
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis" if higher_is_better else "viridis_r"].with_extremes(bad="#d9d9d9")
    finite = grid[np.isfinite(grid)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label=f"holdout {metric}" + (" (higher is better)" if higher_is_better else " (lower is better)"))

    annotate = len(windows) <= 24 and len(cohorts) <= 24
    if annotate:
        middle = (lo + hi) / 2
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                dark = (value < middle) == higher_is_better  # viridis is dark at its low end
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    for keys, color, style in ((retrained, RETRAINED_COLOR, "solid"), (rejected, REJECTED_COLOR, "dashed")):
        for key in keys:
            if key.window in col and key.cohort in row:
                ax.add_patch(
                    Rectangle(
                        (col[key.window] - 0.5, row[key.cohort] - 0.5), 1, 1,
                        fill=False, edgecolor=color, linewidth=2.6, linestyle=style, zorder=3,
                    )  # fmt: skip
                )

    xs, ys = _every(windows, int(width * 4)), _every(cohorts, int(height * 5))
    ax.set_xticks(xs, [windows[j] for j in xs], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ys, [cohorts[i] for i in ys], fontsize=8)
    ax.set_xlabel("window")
    ax.set_ylabel("cohort")
    ax.set_title(title, fontsize=10)
    legend = [
        Patch(fill=False, edgecolor=RETRAINED_COLOR, linewidth=2, label=f"retrained this update ({len(retrained)})"),
        Patch(fill=False, edgecolor=REJECTED_COLOR, linewidth=2, linestyle="dashed", label=f"rejected by the gate ({len(rejected)})"),
        Patch(facecolor="#d9d9d9", label="no sub-model"),
    ]
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def image_markdown(png: bytes, alt: str) -> str:
    """Markdown showing ``png`` inline (a ``data:`` URL: no file the webserver must serve)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
