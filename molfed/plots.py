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


def parity_edges(mean: float, std: float, bins: int = 12) -> list[float]:
    """Common bin edges for every partner: federation mean +- 3 std (from shared aggregates only)."""
    return np.linspace(mean - 3 * std, mean + 3 * std, bins + 1).tolist()


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


def learning_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], metric: str) -> Figure:
    """One panel per partner: ``metric`` on its validation split per round, one line per model kind."""
    partners = list(curves)
    fig, axes = plt.subplots(1, len(partners), figsize=(4 * len(partners), 3.2), squeeze=False, sharey=True)
    for ax, partner in zip(axes[0], partners, strict=True):
        for kind, values in curves[partner].items():
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=kind)
        ax.set_title(partner)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"validation {metric}")
    axes[0][-1].legend()
    fig.tight_layout()
    return fig


def parity_heatmaps(counts: Mapping[str, Sequence[Sequence[int]]], edges: Sequence[float], task: str) -> Figure:
    """Binned parity plot (measured vs predicted) of the final model on each partner's test split."""
    partners = list(counts)
    fig, axes = plt.subplots(1, len(partners), figsize=(4 * len(partners), 3.8), squeeze=False)
    lo, hi = edges[0], edges[-1]
    for ax, partner in zip(axes[0], partners, strict=True):
        grid = np.asarray(counts[partner], dtype=float).T  # rows = predicted bins for imshow's y axis
        grid[grid == 0] = np.nan
        ax.imshow(grid, origin="lower", extent=(lo, hi, lo, hi), cmap="viridis", aspect="equal")
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
        ax.set_title(partner)
        ax.set_xlabel(f"measured {task}")
        ax.set_ylabel(f"predicted {task}")
    fig.suptitle(f"test split, binned; cells with < {MIN_CELL_COUNT} molecules hidden", fontsize=9)
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


def png_data_uri(fig: Figure, dpi: int = 72) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (for Markdown that cannot link local files)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def close(fig: Figure) -> None:
    plt.close(fig)
