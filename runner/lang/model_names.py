"""Model strings checked before any run: `local/` names runner does not have, model
files that are not there, an embedding model asked to answer a prompt (or the other way
round), and a mapping's `model:` key written without its space.

Each function returns what is wrong, worded for the author, or None.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from runner.core.local_models import CHAT_MODELS, EMBEDDING_MODELS, GGUF, PREFIX
from runner.lang.schema import load_schema

_KEYED = re.compile(r"(?P<key>[a-z_]+):(?P<rest>\S.*)")


def declared(model: str, folder: Path) -> str | None:
    """Why a model string cannot name any model, or None. `folder` holds the flow: a
    relative `local/<path>.gguf` is read from there."""
    keyed = _KEYED.fullmatch(model)
    if keyed and keyed["key"] in load_schema("flow.v1.json")["$defs"]["model"]["properties"]:
        key, rest = keyed["key"], keyed["rest"]
        return (
            f"`{model}` reads as one model string, not as the key `{key}` and its value: "
            f"put a space after the `:` (`{key}: {rest}`)"
        )
    if not model.startswith(PREFIX):
        return None
    name = model.removeprefix(PREFIX)
    if name.endswith(GGUF):
        path = Path(name).expanduser()
        if (path if path.is_absolute() else folder / path).is_file():
            return None
        return (
            f"no model file `{name}`: `local/<path>.gguf` names a GGUF file, by its path "
            "from the flow's folder or from the root"
        )
    known = [*CHAT_MODELS, *EMBEDDING_MODELS]
    if name in known:
        return None
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean `{PREFIX}{close[0]}`?" if close else ""
    listed = ", ".join(PREFIX + n for n in known)
    return (
        f"unknown local model `{model}`{hint} (runner's local models: {listed}; "
        "or `local/<path>.gguf` for a model file)"
    )


def misused(model: str, *, embedding: bool, name: str | None = None) -> str | None:
    """Why a known local model cannot serve this use (answering a prompt, or embedding
    text for a similarity gate), or None. `name` is the model's name under `models`."""
    if not model.startswith(PREFIX):
        return None
    local = model.removeprefix(PREFIX)
    subject = f"model `{name}` (`{model}`)" if name and name != model else f"`{model}`"
    listed = ", ".join(PREFIX + n for n in EMBEDDING_MODELS)
    if embedding and (local in CHAT_MODELS or local.endswith(GGUF)):
        return (
            f"{subject} is a chat model; a similarity gate compares texts with an "
            f"embedding model: {listed} (or a hosted one)"
        )
    if not embedding and local in EMBEDDING_MODELS:
        return (
            f"{subject} is an embedding model: it turns text into numbers for a "
            "similarity gate and cannot answer a prompt; name a chat model here"
        )
    return None
