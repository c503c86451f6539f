"""What a report is made of (headings, sentences, tables, pictures) and how each format
writes it: Markdown, or an HTML page that stands alone (inline CSS and SVG; no script,
no link, no font to fetch). Every text is escaped for its format here; numbers are worded
here too, the same in every format."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    """A title; level 1 is the report's own."""

    level: int
    text: str


@dataclass(frozen=True)
class Sentence:
    """A line of text."""

    text: str


@dataclass(frozen=True)
class Table:
    """Rows of cells, already worded."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Pictures:
    """Drawn for HTML only: each draws an SVG, given a prefix that keeps its ids unique."""

    caption: str
    draw: tuple[Callable[[str], str], ...]


Block = Heading | Sentence | Table | Pictures


def markdown(title: str, blocks: Sequence[Block]) -> str:
    """The blocks as Markdown under `title`; pictures are left out."""
    shown = [block for block in [Heading(1, title), *blocks] if not isinstance(block, Pictures)]
    return "\n\n".join(map(_markdown, shown)) + "\n"


def _markdown(block: Block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + _md(block.text)
    if isinstance(block, Sentence):
        return _md(block.text)
    if isinstance(block, Table):
        rule = "|" + " --- |" * len(block.header)
        return "\n".join([_markdown_row(block.header), rule, *map(_markdown_row, block.rows)])
    raise TypeError(f"no Markdown for {block!r}")


def _md(text: str) -> str:
    """Text from the flow or the data, kept literal in Markdown (and in a table cell)."""
    one_line = " ".join(text.split())
    return re.sub(r"([\\`*_\[\]<>|&$])", r"\\\1", one_line)


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md(cell) for cell in cells) + " |"


# --- numbers, worded the same in every format -------------------------------------------


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def share(value: float) -> str:
    """90%, 92.5%: a percentage without a needless decimal."""
    return f"{value * 100:.1f}".removesuffix(".0") + "%"


def floored(value: float) -> str:
    """A lower bound, rounded down: shown, it never promises more than it is."""
    return f"{math.floor(value * 1000 + 1e-9) / 10:.1f}%"


def threshold(value: float) -> str:
    return f"{value:.6g}"


def usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4g}"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


# --- HTML -------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; }
figure { margin: .6em 0; }
.pictures { display: flex; flex-wrap: wrap; gap: 1em; }
svg { max-width: 100%; height: auto; }
"""


def html_page(title: str, blocks: Sequence[Block]) -> str:
    """The blocks as an HTML page under `title`."""
    body = []
    for n, block in enumerate([Heading(1, title), *blocks]):
        body.append(_html(block, f"p{n}-"))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _html(block: Block, ids: str) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Sentence):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>\n"
            for row in block.rows
        )
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>"
    svgs = "".join(f"<div>{draw(f'{ids}{n}-')}</div>" for n, draw in enumerate(block.draw))
    caption = f"<figcaption>{html.escape(block.caption)}</figcaption>"
    return f'<figure>\n<div class="pictures">{svgs}</div>\n{caption}\n</figure>'
