"""A `runner worker` on a thread of the test process, for as long as a test needs it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from runner.runtime.engine import Engine
from runner.service.worker import Worker, WorkerOptions


def work_until(
    engine: Engine, options: WorkerOptions, until: Callable[[], object], seconds: float = 30.0
) -> Worker:
    """Run a worker on its own thread until `until()` holds (or `seconds` pass), then
    stop it the way SIGTERM does; the worker, for its tally."""
    worker = Worker(engine, options)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    worker.wakeup.wake()
    thread.join(seconds)
    return worker
