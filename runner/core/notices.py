"""What runner tells the person or the log collector watching it, on stderr: errors,
progress, warnings. A command's own output goes to stdout; notices never do.

`--log-format json` (or RUNNER_LOG_FORMAT=json) makes each notice one JSON object per
line, `{"time", "level", "message", ...}`, for services whose stderr a log collector
reads; the default is text, `runner: message`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
_format = {"value": os.environ.get("RUNNER_LOG_FORMAT", "text")}
_lock = threading.Lock()  # lines from several threads never interleave


def use_format(name: str) -> None:
    """`text` or `json`, for every notice from now on."""
    _format["value"] = name


def notice(message: str, *, level: str = "info", prefix: bool = True, **fields: Any) -> None:
    """One notice. `prefix` False prints text as is (a located problem already says
    where it is from); `fields` go into the JSON line only."""
    if _format["value"] == "json":
        line = json.dumps(
            {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "level": level,
                "message": message,
                **fields,
            },
            ensure_ascii=False,
            default=str,
        )
    else:
        line = f"runner: {message}" if prefix else message
    with _lock:
        print(line, file=sys.stderr, flush=True)
