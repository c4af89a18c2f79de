"""Figures a chemist would rather look at than read. Pure matplotlib (Agg); the caller decides where they go.

Parity plots leave partners only as binned counts (:func:`binned_parity`, computed partner-side) with sparse
cells suppressed, so a figure in MLflow never shows an individual molecule's measured value.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: Cells of a binned parity plot with fewer molecules than this are blanked before leaving the partner.
MIN_CELL_COUNT = 5


def parity_bins(n_test: int) -> int:
    """Bins per axis for a partner with ``n_test`` test molecules: about two molecules per cell of a diagonal-heavy
    grid, 4 to 12, so that a small partner's cells are not all below :data:`MIN_CELL_COUNT` and blanked."""
    return int(np.clip(np.sqrt(max(n_test, 0) / 2), 4, 12))


def parity_edges(mean: float, std: float, bins: int = 12) -> list[float]:
    """Common bin edges for every partner: federation mean +- 2.5 std (from shared aggregates only); values outside
    fall into the edge bins."""
    return np.linspace(mean - 2.5 * std, mean + 2.5 * std, bins + 1).tolist()


def axis_label(quantity: str, unit: str | None) -> str:
    """``quantity (unit)``, or ``quantity`` without a unit."""
    return f"{quantity} ({unit})" if unit else quantity


def binned_parity(
    y_true: np.ndarray, y_pred: np.ndarray, edges: Sequence[float], *, min_count: int = MIN_CELL_COUNT
) -> list[list[int]]:
    """2-D histogram of (measured, predicted), values clipped into the edge range, sparse cells set to 0.

    Returns ``counts[i][j]`` for measured bin ``i`` and predicted bin ``j``.
    """
    mask = ~(np.isnan(y_true) | np.isnan(y_pred))
    lo, hi = edges[0], edges[-1]
    t = np.clip(y_true[mask], lo, hi)
    p = np.clip(y_pred[mask], lo, hi)
    counts, _, _ = np.histogram2d(t, p, bins=[np.asarray(edges), np.asarray(edges)])
    counts[counts < min_count] = 0
    return counts.astype(int).tolist()


def learning_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]], metric: str, unit: str | None = None
) -> Figure:
    """One panel per partner: ``metric`` on its validation split per round, one line per model kind; ``unit``
    labels the axis of a metric in the task's unit (RMSE, MAE)."""
    from matplotlib.ticker import MaxNLocator

    partners = list(curves)
    fig, axes = plt.subplots(1, len(partners), figsize=(4 * len(partners), 3.2), squeeze=False, sharey=True)
    for ax, partner in zip(axes[0], partners, strict=True):
        for kind, values in curves[partner].items():
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=kind)
        ax.set_title(partner)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(axis_label(f"validation {metric}", unit if metric in ("rmse", "mae") else None))
    axes[0][-1].legend()
    fig.tight_layout()
    return fig


def parity_heatmaps(
    counts: Mapping[str, Sequence[Sequence[int]]], edges: Sequence[float], task: str, unit: str | None = None
) -> Figure:
    """Binned parity plot (measured vs predicted) of the kept model on each partner's test split, plus the sum over
    partners; each cell shows its count (cells under :data:`MIN_CELL_COUNT` were blanked at the partner)."""
    panels = {name: np.asarray(c, dtype=float) for name, c in counts.items() if np.asarray(c).size}
    if len(panels) > 1:
        panels["all partners"] = sum(panels.values())  # type: ignore[assignment]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.6 * max(1, len(panels)), 3.8), squeeze=False)
    lo, hi = edges[0], edges[-1]
    width = (hi - lo) / max(1, len(edges) - 1)
    for ax, (name, grid) in zip(axes[0], panels.items(), strict=False):
        shown = grid.T.copy()  # rows = predicted bins for imshow's y axis
        ax.imshow(np.where(shown == 0, np.nan, shown), origin="lower", extent=(lo, hi, lo, hi), cmap="viridis")
        for i, j in zip(*np.nonzero(shown), strict=True):
            x, y = lo + (j + 0.5) * width, lo + (i + 0.5) * width
            ax.text(x, y, str(int(shown[i, j])), ha="center", va="center", fontsize=7, color="white")
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
        ax.set_title(f"{name} ({int(grid.sum())} shown)")
        ax.set_xlabel(axis_label(f"measured {task}", unit))
        ax.set_ylabel(axis_label(f"predicted {task}", unit))
    fig.suptitle(
        f"test split, binned (edge bins hold values beyond them); cells with < {MIN_CELL_COUNT} molecules hidden",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def parity_scatter(y_true: np.ndarray, y_pred: np.ndarray, task: str, *, title: str, unit: str | None = None) -> Figure:
    """Every molecule as a point, with RMSE in the title: for the partner's own workspace only, never a shared
    store (it shows each measured value)."""
    mask = ~(np.isnan(y_true) | np.isnan(y_pred))
    t, p = y_true[mask], y_pred[mask]
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter(t, p, s=12, alpha=0.7)
    if t.size:
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
        title += f"; n = {t.size}, RMSE {float(np.sqrt(np.mean((t - p) ** 2))):.3g}"
    ax.set_xlabel(axis_label(f"measured {task}", unit))
    ax.set_ylabel(axis_label(f"predicted {task}", unit))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def value_bars(rows: Sequence[Mapping[str, object]], metric: str, kinds: Sequence[str]) -> Figure:
    """Grouped bars: per partner (and over all partners), test ``metric`` of each model kind side by side.

    ``rows`` as :func:`~molfed.federated.coordinator.comparison_rows` returns them; missing values leave a gap.
    """
    labels = [str(r["partner"]) for r in rows]
    x = np.arange(len(labels))
    width = 0.8 / max(len(kinds), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(labels) + 1.5), 3.4))
    for i, kind in enumerate(kinds):
        values = [v if isinstance(v, float) else np.nan for v in (r.get(kind) for r in rows)]
        bars = ax.bar(x + (i - (len(kinds) - 1) / 2) * width, values, width, label=kind)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, labels)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"value of federation: test {metric} on each partner's own scaffold test split", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def coverage_plot(rows: Sequence[Mapping[str, object]]) -> Figure:
    """Nominal vs empirical coverage of the conformal intervals/sets on each partner's test split and their union.

    ``rows``: ``{partner, level, coverage, n}`` (:func:`molfed.federated.calibration.coverage_table`); a partner's
    grey band is the binomial 95 % range of coverage an exact ``level`` would give on its ``n`` labels."""
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    partners = list(dict.fromkeys(str(r["partner"]) for r in rows))
    for partner in partners:
        mine = [r for r in rows if str(r["partner"]) == partner]
        levels = [float(r["level"]) for r in mine]  # type: ignore[arg-type]
        cover = [float(r["coverage"]) for r in mine]  # type: ignore[arg-type]
        style = {"color": "black", "linewidth": 2} if partner == "all" else {"linewidth": 1}
        ax.plot(levels, cover, marker="o", markersize=4, label=partner, **style)  # type: ignore[arg-type]
    lo, hi = 0.5, 1.0
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo - 0.1, 1.02)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage (test split)")
    ax.set_title("conformal calibration: nominal vs empirical", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def png_data_uri(fig: Figure, dpi: int = 72) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (for Markdown that cannot link local files)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def close(fig: Figure) -> None:
    plt.close(fig)
