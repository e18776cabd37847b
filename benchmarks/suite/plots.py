"""PNG plots (matplotlib, Agg backend: no display needed) for the reports."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: label -> (xs, ys); a label starting with "orthanc" is drawn dashed.
Series = dict[str, tuple[list[float], list[float]]]


def lines(path: Path, title: str, xlabel: str, ylabel: str, series: Series, *,
          logx: bool = False, logy: bool = False, hline: tuple[float, str] | None = None,
          markers: bool = True) -> Path:
    """One line per series; ``hline`` = (y, label) draws a target."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for label, (xs, ys) in series.items():
        style = "--" if label.lower().startswith("orthanc") else "-"
        ax.plot(xs, ys, style, marker="o" if markers else None, markersize=3, label=label)
    if hline is not None:
        ax.axhline(hline[0], color="red", linewidth=1, linestyle=":", label=hline[1])
    if logx:
        ax.set_xscale("log")
    xs_all = sorted({x for xs, _ in series.values() for x in xs})
    if xs_all and len(xs_all) <= 12 and all(float(x).is_integer() for x in xs_all):
        ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])  # the measured points, e.g. 1,2,4,8
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if series or hline:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def bars(path: Path, title: str, ylabel: str, groups: list[str],
         values: dict[str, list[float]]) -> Path:
    """Grouped bars: one group per entry of ``groups``, one bar per key of ``values``."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    n = max(1, len(values))
    width = 0.8 / n
    for i, (label, ys) in enumerate(values.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, ys, width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=20, fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def md_image(path: Path, alt: str) -> str:
    """Markdown image reference, relative to the report directory."""
    return f"![{alt}]({path.name})"
