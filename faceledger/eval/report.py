"""Evaluation reports: a folder with a self-contained HTML page (plots embedded), the plots as
PNG files, and a JSON of every number."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from faceledger.eval.metrics import Curve, Rate  # noqa: E402


@dataclass
class Report:
    title: str
    summary: list[tuple[str, str]] = field(default_factory=list)  # (label, value) shown on top
    notes: list[str] = field(default_factory=list)  # plain-language caveats and warnings
    tables: list[tuple[str, Sequence[str], list[Sequence[object]]]] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        """Write report.html, results.json and one PNG per figure; returns the HTML path."""
        folder.mkdir(parents=True, exist_ok=True)
        images = {}
        for name, figure in self.figures.items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
            plt.close(figure)
            (folder / f"{name}.png").write_bytes(buffer.getvalue())
            images[name] = base64.b64encode(buffer.getvalue()).decode()
        (folder / "results.json").write_text(json.dumps(self.numbers, indent=2, default=_json_default))
        page = folder / "report.html"
        page.write_text(self._html(images))
        return page

    def _html(self, images: dict[str, str]) -> str:
        e = html.escape
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{e(self.title)}</title><style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "th{background:#f4f4f4}.note{background:#fff6dd;border-left:4px solid #e0a800;padding:6px 10px;margin:6px 0}"
            "</style></head><body>",
            f"<h1>{e(self.title)}</h1><table>",
            *[f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in self.summary],
            "</table>",
            *[f"<div class='note'>{e(note)}</div>" for note in self.notes],
        ]
        for caption, header, rows in self.tables:
            parts.append(f"<h2>{e(caption)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(_cell(v))}</td>" for v in row) + "</tr>" for row in rows]
            parts.append("</table>")
        for name, data in images.items():
            parts.append(
                f"<h2>{e(name.replace('_', ' '))}</h2><img alt='{e(name)}' src='data:image/png;base64,{data}'>"
            )
        parts.append("</body></html>")
        return "\n".join(parts)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Rate):
        return value.as_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def rate_text(rate: Rate) -> str:
    """'0.123% [0.100%, 0.150%] (12 of 9,760)'."""
    if rate.trials == 0:
        return "no comparisons"
    low, high = rate.interval
    return f"{rate.value:.3%} [{low:.3%}, {high:.3%}] ({rate.errors:,} of {rate.trials:,})"


def roc_figure(curves: dict[str, Curve]) -> Figure:
    """TAR against FMR (log scale)."""
    return _tradeoff_figure(curves, det=False)


def det_figure(curves: dict[str, Curve]) -> Figure:
    """FNMR against FMR, both on log scales."""
    return _tradeoff_figure(curves, det=True)


def _tradeoff_figure(curves: dict[str, Curve], *, det: bool) -> Figure:
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for label, curve in curves.items():
        keep = (curve.fmr > 0) & ((curve.fnmr > 0) if det else True)
        axes.plot(curve.fmr[keep], curve.fnmr[keep] if det else 1 - curve.fnmr[keep], label=label)
    axes.set_xscale("log")
    axes.set_xlabel("false match rate (FMR)")
    if det:
        axes.set_yscale("log")
        axes.set_ylabel("false non-match rate (FNMR)")
    else:
        axes.set_ylabel("true accept rate (TAR = 1 - FNMR)")
    axes.set_title("DET" if det else "ROC")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return figure


def score_histogram_figure(edges: np.ndarray, mated: np.ndarray, nonmated: np.ndarray, threshold: float) -> Figure:
    """Mated vs non-mated score distributions (each normalised), with the operating threshold."""
    figure, axes = plt.subplots(figsize=(7, 4))
    step = max(1, len(edges) // 300)
    coarse_edges = edges[::step]
    for counts, label in ((mated, "mated (same person)"), (nonmated, "non-mated (different people)")):
        coarse = np.add.reduceat(counts, np.arange(0, len(counts), step))[: len(coarse_edges)]
        total = coarse.sum()
        if total:
            axes.step(coarse_edges, coarse / total, where="post", label=label)
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    axes.set_xlabel("similarity (unclamped)")
    axes.set_ylabel("share of comparisons")
    axes.set_xlim(-40, 100)
    axes.legend()
    return figure


def group_bars_figure(title: str, rates: dict[str, Rate]) -> Figure:
    figure, axes = plt.subplots(figsize=(6, 3.5))
    names = [n for n, rate in rates.items() if rate.trials]  # a group with no comparisons has no bar
    values = [rates[n].value for n in names]
    lows = [max(0.0, v - rates[n].interval[0]) for n, v in zip(names, values, strict=True)]
    highs = [max(0.0, rates[n].interval[1] - v) for n, v in zip(names, values, strict=True)]
    axes.bar(names, values, yerr=[lows, highs], capsize=6, color="#5b8db8")
    axes.set_title(title)
    axes.set_ylabel("rate (95% interval)")
    if any(v > 0 for v in values) and all(not math.isnan(v) for v in values):
        axes.set_ylim(bottom=0)
    return figure
