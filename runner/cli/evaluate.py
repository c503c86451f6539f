"""`runner eval`: run a flow's model steps on labelled cases and report how right its
answers are and how well its confidence gates tell right from wrong; with `--against`,
the same for another git revision of the flow, side by side."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, TextIO

from runner.core.errors import UsageError
from runner.core.notices import notice
from runner.core.vocabulary import ExitCode

FORMATS = ("markdown", "json", "html")


def add_eval_command(commands: Any) -> None:
    evaluate = commands.add_parser(
        "eval", help="measure a flow's answers and confidence gates on labelled cases"
    )
    evaluate.add_argument("flow", metavar="FLOW")
    evaluate.add_argument(
        "--data", required=True, metavar="FILE", help="labelled cases, one JSON object per line"
    )
    evaluate.add_argument(
        "--against", metavar="REV", help="also evaluate the flow at this git revision, and compare"
    )
    evaluate.add_argument("--format", choices=FORMATS, default="markdown")
    evaluate.add_argument("--output", metavar="FILE", help="write the report here")
    evaluate.add_argument("--concurrency", type=_count, default=4, metavar="N")
    evaluate.add_argument(
        "--target-precision",
        type=_share,
        default=0.9,
        metavar="P",
        help="find the lowest min whose precision's 95%% lower bound reaches P (default 0.9)",
    )
    evaluate.add_argument(
        "--max-regression",
        type=_share,
        default=0.02,
        metavar="D",
        help="with --against: exit 1 when accuracy or precision falls by more than D",
    )
    caching = evaluate.add_mutually_exclusive_group()
    caching.add_argument("--cache", metavar="FILE", help="where model answers are kept")
    caching.add_argument("--no-cache", action="store_true", help="ask the models every time")
    evaluate.set_defaults(command=cmd_eval)


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError("give a whole number from 1 to 256")
    return int(text)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("give a number from 0 to 1, e.g. 0.9")
    return value


def cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    from runner.eval.comparison import compare
    from runner.eval.metrics import measure
    from runner.eval.report import render, render_comparison

    if args.output and not Path(args.output).resolve().parent.is_dir():
        raise UsageError(f"--output {args.output}: there is no folder {Path(args.output).parent}")
    if args.against is None:
        current = _evaluate(args, Path(args.flow), None)
        figures = measure(current, args.target_precision)
        _write(args, out, render(current, figures, args.format))
        return ExitCode.OK
    with tempfile.TemporaryDirectory(prefix="runner-eval-") as folder:
        flow = _at_revision(Path(args.flow), args.against, Path(folder))  # before any cost
        current = _evaluate(args, Path(args.flow), None)
        baseline = _evaluate(args, flow, args.against)
    comparison = compare(baseline, current, args.target_precision)
    report = render_comparison(baseline, current, comparison, args.format, args.max_regression)
    _write(args, out, report)
    regressions = comparison.regressions(args.max_regression)
    for line in regressions:
        notice(f"regression: {line}", level="error")
    return ExitCode.FAILED if regressions else ExitCode.OK


def _evaluate(args: argparse.Namespace, flow_path: Path, revision: str | None) -> Any:
    from runner.eval.cache import AnswerCache
    from runner.eval.cases import read_cases
    from runner.eval.run import Evaluation
    from runner.lang.load import load_flow
    from runner.runtime.embeddings import Embeddings
    from runner.runtime.local_models import LocalModels, cache_dir
    from runner.runtime.models import LiteLLMClient

    compiled = load_flow(flow_path)
    cases = read_cases(Path(args.data), compiled.flow)
    cache = None if args.no_cache else AnswerCache(args.cache or cache_dir() / "answers.sqlite3")
    local, embeddings = LocalModels(), Embeddings()
    label = f"{compiled.flow.name}" + (f" at {revision}" if revision else "")
    progress = _Progress(len(cases), label)
    try:
        evaluation = Evaluation(
            LiteLLMClient(local), cache=cache, embedder=embeddings, concurrency=args.concurrency
        )
        return evaluation.run(
            compiled, cases, data=args.data, revision=revision, progress=progress.advance
        )
    finally:
        progress.stop()
        local.close()
        embeddings.close()
        if cache:
            cache.close()


def _at_revision(flow: Path, revision: str, folder: Path) -> Path:
    """The flow's folder as it was at `revision`, written under `folder`; the flow file
    in it."""
    here = flow.resolve().parent
    top = _git(here, "rev-parse", "--show-toplevel").decode().strip()
    inside = flow.resolve().relative_to(Path(top).resolve())
    archive = _git(Path(top), "archive", "--format=tar", revision, "--", str(inside.parent))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    found = folder / inside
    if not found.is_file():
        raise UsageError(f"{inside} does not exist at revision {revision}")
    return found


def _git(where: Path, *command: str) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(where), *command],
            capture_output=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except FileNotFoundError as exc:
        raise UsageError("--against needs git, which is not installed") from exc
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(f"git {command[0]}: {said[-1] if said else 'failed'}")
    return done.stdout


def _write(args: argparse.Namespace, out: TextIO, report: str) -> None:
    if args.output:
        try:
            Path(args.output).write_text(report, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write --output {args.output}: {exc.strerror}") from exc
        notice(f"wrote the report to {args.output}")
    else:
        out.write(report if report.endswith("\n") else report + "\n")


class _Progress:
    """Cases done: a rich progress bar on a terminal, else a line on stderr at every
    tenth of the cases (for CI logs)."""

    def __init__(self, total: int, label: str) -> None:
        self.bar: Any = None
        self.total, self.label, self.done = total, label, 0
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(f"evaluating {label}", total=total)
            self.bar.start()

    def advance(self, _: Any) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.advance(self.task)
        elif self.done * 10 // self.total != (self.done - 1) * 10 // self.total:
            notice(
                f"{self.label}: {self.done}/{self.total} cases", done=self.done, total=self.total
            )

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
