"""The pictures of a confidence gate in the HTML report, as SVG to inline in the page:
its risk-coverage curve, and the scores of right and wrong answers. matplotlib (slow to
import) is imported when a picture is drawn, never when runner starts; drawing goes
through `Figure` alone, so no GUI backend and no pyplot state is involved."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from runner.eval.metrics import RiskRow

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
_MARKERS = ("s", "*", "D", "^")


def risk_coverage_svg(
    curves: Sequence[tuple[str, Sequence[RiskRow]]],
    marks: Sequence[tuple[str, RiskRow]],
    target_precision: float,
    ids: str,
) -> str:
    """Coverage across, precision up: per table, the precision of what passes at each min
    (solid) and its lower bound (dashed); each mark a labelled point; the target dotted.
    `ids` prefixes the SVG's ids, to keep them unique in a page of many pictures."""
    with _drawing() as (figure, axes):
        for label, rows in curves:
            shown = [row for row in rows if row.passing]
            coverage = [row.coverage for row in shown]
            precision = [row.correct / row.passing for row in shown]
            (line,) = axes.plot(coverage, precision, label=label)
            axes.plot(
                coverage,
                [row.lower_bound for row in shown],
                linestyle="--",
                color=line.get_color(),
                label=f"{label}: lower bound",
            )
        axes.axhline(target_precision, linestyle=":", color="grey", label="target")
        for (label, row), marker in zip(marks, _MARKERS, strict=False):
            axes.plot([row.coverage], [row.precision or 0.0], marker, color="black", label=label)
        axes.set_xlim(0.0, 1.02)
        axes.set_ylim(0.0, 1.02)
        axes.set_xlabel("coverage (share of answers passing)")
        axes.set_ylabel("precision of what passes")
        axes.legend(loc="lower left", fontsize="small")
        return _svg(figure, ids)


def score_histogram_svg(
    right: Sequence[float | None],
    wrong: Sequence[float | None],
    mins: Sequence[tuple[str, float]],
    ids: str,
) -> str:
    """The scores of right answers over those of wrong ones, on the same bins, each min
    in `mins` a vertical line; answers without a score are counted in the legend."""
    scored = [score for score in [*right, *wrong] if score is not None]
    low, high = (min(scored), max(scored)) if scored else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    with _drawing() as (figure, axes):
        for label, scores, color in (("right", right, "tab:green"), ("wrong", wrong, "tab:red")):
            values = [score for score in scores if score is not None]
            missing = len(scores) - len(values)
            count = f"{len(values)}" + (f", {missing} without a score" if missing else "")
            axes.hist(
                values,
                bins=20,
                range=(low, high),
                alpha=0.5,
                color=color,
                label=f"{label} ({count})",
            )
        for (label, value), style in zip(mins, ("-", "--", ":"), strict=False):
            axes.axvline(value, color="black", linestyle=style, label=f"{label} {value:.3g}")
        axes.set_xlabel("score")
        axes.set_ylabel("answers")
        axes.legend(fontsize="small")
        return _svg(figure, ids)


@contextmanager
def _drawing() -> Iterator[tuple[Figure, Axes]]:
    import matplotlib
    from matplotlib.figure import Figure

    # Text as paths: the page needs no font. A fixed salt: the same figures, the same SVG.
    with matplotlib.rc_context(
        {"svg.fonttype": "path", "svg.hashsalt": "runner-eval", "font.size": 8.0}
    ):
        figure = Figure(figsize=(4.6, 3.2), layout="constrained")
        yield figure, figure.subplots()


def _svg(figure: Figure, ids: str) -> str:
    """The figure as an `<svg>` element for an HTML page: no XML prolog or DOCTYPE (whose
    DTD is a link), no namespace attributes (HTML gives inline SVG its namespace), every
    id and reference to one prefixed with `ids`."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata=_NO_METADATA)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'\s(?:xmlns(?::\w+)?|version)="[^"]*"', "", text)
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{ids}{m[1]}"', text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{ids}{m[1]}"', text)
    return re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{ids}{m[1]})", text)
