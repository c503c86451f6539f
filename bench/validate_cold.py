"""Cold start of `runner validate`: a fresh interpreter each time, as in CI or a pre-commit
hook, against a bare `python -c pass` for reference.

    python bench/validate_cold.py [--runs N] [--warmups N] [--flow PATH]

Run from the repository root. Each command first runs --warmups times unmeasured (to
fill the OS file cache), then both are timed --runs times, interleaved so that any
drift in the machine's load hits both alike. Prints median, p90 and min wall time of
each, and the difference: what runner itself costs on top of starting Python.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time


def timed(command: list[str]) -> float:
    """Wall time of one run of `command`, in seconds; it must succeed."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return elapsed


def p90(samples: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "p90": p90(samples), "min": min(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs (default 20)")
    parser.add_argument("--warmups", type=int, default=2, help="unmeasured runs (default 2)")
    parser.add_argument("--flow", default="flows/support.yaml", help="the flow to validate")
    args = parser.parse_args()

    commands = {
        "runner validate": [sys.executable, "-m", "runner", "validate", args.flow],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    for command in commands.values():
        for _ in range(args.warmups):
            timed(command)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            samples[name].append(timed(command))

    print(
        f"cold wall time, {args.runs} runs each after {args.warmups} warm-ups "
        f"({sys.executable}, Python {sys.version.split()[0]})"
    )
    print(f"{'':<38}{'median':>10}{'p90':>10}{'min':>10}")
    stats = {name: summary(found) for name, found in samples.items()}
    for name, found in stats.items():
        label = f"{name} {args.flow}" if name == "runner validate" else name
        print(f"{label:<38}" + "".join(f"{found[k] * 1000:>8.1f}ms" for k in found))
    runner, python = stats["runner validate"], stats["python -c pass"]
    print(
        f"{'difference (runner)':<38}"
        + "".join(f"{(runner[k] - python[k]) * 1000:>8.1f}ms" for k in runner)
    )


if __name__ == "__main__":
    main()
