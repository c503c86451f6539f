"""The flow's diagram on the run page, with the step where the run stopped marked.

`runner graph --format dot` draws the flow (runner.lang.diagram); Graphviz's `dot`
turns that into SVG when it is installed. The stopped step's node is restyled by one
more statement at the end of the graph (dot merges a node's attributes). The SVG is
served on a route of its own and shown with <img>: an image runs no script, and the
route's response has its own Content-Security-Policy that allows nothing but the SVG's
inline styles. It is checked before it is served all the same: an SVG document with
nothing in it but drawing (no script, no foreign object, no link, no event handler).

Without `dot` (or when it fails), the page shows the flow's steps as a list, the stopped
one marked (`steps`).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from runner.lang.compiler import CompiledFlow
from runner.lang.diagram import dot, dot_text, picture

DOT_SECONDS = 10.0
CACHED = 256  # diagrams remembered, by (flow version, stopped step)
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
_SVG = "{http://www.w3.org/2000/svg}"
_REFUSED_TAGS = {"script", "foreignObject", "a", "iframe", "image", "use", "animate", "set"}
MARK = 'style="rounded,filled,bold", fillcolor="#ffe08a", color="#8a5a00", penwidth=3'


@dataclass(frozen=True)
class StepItem:
    """A step of the fallback list."""

    id: str
    kind: str
    stopped: bool


def steps(compiled: CompiledFlow, stopped: str | None) -> list[StepItem]:
    """The flow's steps in order, the stopped one marked."""
    return [StepItem(s.id, s.kind, s.id == stopped) for s in compiled.flow.steps]


def marked_dot(compiled: CompiledFlow, stopped: str | None) -> str:
    """The flow's dot text, with the stopped step's node restyled and labelled."""
    text = dot(compiled)
    place = next(
        (p for p in picture(compiled).places.values() if p.style == "step" and p.name == stopped),
        None,
    )
    if place is None:
        return text
    label = dot_text(f"{place.name}\n(stopped here)")
    return text.rstrip().removesuffix("}") + f"    {place.id} [label={label}, {MARK}];\n}}\n"


def plain_svg(data: bytes) -> bool:
    """Whether `data` is an SVG document of drawing only (what dot makes)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return False
    if root.tag != f"{_SVG}svg":
        return False
    for element in root.iter():
        if element.tag.rpartition("}")[2] in _REFUSED_TAGS:
            return False
        for name in element.attrib:
            local = name.rpartition("}")[2].lower()
            if local.startswith("on") or local == "href":
                return False
    return True


class Diagrams:
    """SVG diagrams made with `dot`, remembered by flow version and stopped step.
    Thread-safe."""

    def __init__(self, binary: str | None = None, *, look: bool = True) -> None:
        """`binary` is Graphviz's `dot`; by default the one on PATH (unless not `look`)."""
        self.binary = binary or (shutil.which("dot") if look else None)
        self._lock = threading.Lock()
        self._made: dict[tuple[str, str | None], bytes | None] = {}

    @property
    def available(self) -> bool:
        return self.binary is not None

    def svg(self, digest: str, compiled: CompiledFlow, stopped: str | None) -> bytes | None:
        """The diagram as SVG; None without `dot`, or when its output is not plain SVG."""
        if self.binary is None:
            return None
        with self._lock:
            if (digest, stopped) in self._made:
                return self._made[(digest, stopped)]
        made = self._render(marked_dot(compiled, stopped))
        with self._lock:
            if len(self._made) >= CACHED:
                self._made.clear()
            self._made[(digest, stopped)] = made
        return made

    def _render(self, text: str) -> bytes | None:
        assert self.binary is not None
        try:
            done = subprocess.run(
                [self.binary, "-Tsvg"],
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=DOT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        ok = done.returncode == 0 and plain_svg(done.stdout)
        return done.stdout if ok else None
