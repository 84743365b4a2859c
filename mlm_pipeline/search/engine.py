"""Answering a query: encode it as the release's features were encoded, embed it with the model,
rank the other modality by cosine similarity, and predict where it is.

Ranking is exact: one matrix product over every row of the other modality (at MLM's 410k
images and 256 dimensions, about 0.1 GFLOP and 420 MB of memory read per pass, which queries
arriving together share: ``Ranker``), then the best row of each entity, best entities first, so
one entity's three summaries do not fill three places. Ties go to the lower row, so the same
query always gets the same answer.

The location is the model's geo-cell head on the query's embedding (the image head for an
image, the text head for a text): the most probable cells with their probabilities and
polygons, and the most probable cell's mean coordinates as the point estimate, which is what
the paper's location evaluation measures distances from. A query whose bytes or text are an
item of the release is recognised by sha256, and the answer gives that item's true position
and the distance to the estimate.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mlm_pipeline.encoders.vectors import vector_matrix
from mlm_pipeline.model.metrics import haversine_km
from mlm_pipeline.model.networks import MLMNet
from mlm_pipeline.search.index import IMAGE, TEXT, ClassVectors, embed_images, embed_texts, text_sha256
from mlm_pipeline.search.queries import UploadedImage
from mlm_pipeline.search.worldmap import cell_polygon

TOP_CELLS = 5
EncodeText = Callable[[str], np.ndarray]  # a text to its (text_dim,) feature vector
EncodeImage = Callable[[bytes], np.ndarray]  # image bytes to the (image_dim,) descriptor


class Rows:
    """One modality of the index, as arrays; rows sorted by entity, as stored."""

    def __init__(self, index: pa.Table, kind: str) -> None:
        table = index.filter(pc.equal(index.column("kind"), kind))
        self.kind = kind
        self.vectors = np.ascontiguousarray(vector_matrix(table.column("vector")), dtype=np.float32)
        self.qids = np.asarray(table.column("qid").to_pylist(), dtype=object)
        self.items = table.column("item").to_pylist()
        self.labels = table.column("label").to_pylist()
        self.lat = table.column("lat").to_numpy()
        self.lon = table.column("lon").to_numpy()
        self.sha256 = np.asarray(table.column("sha256").to_pylist(), dtype="S64")
        self.texts = table.column("text")
        _, self.entity = np.unique(self.qids.astype(str), return_inverse=True)

    def __len__(self) -> int:
        return len(self.qids)

    def top(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the ``k`` best entities, each by its best-scoring row."""
        return self._best(self.vectors @ query.astype(np.float32), k)

    def top_many(self, queries: np.ndarray, ks: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``top`` for several queries with one pass over the matrix."""
        scores = queries.astype(np.float32) @ self.vectors.T
        return [self._best(scores[j], k) for j, k in enumerate(ks)]

    def _best(self, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(scores)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        m = min(n, max(4 * k, 64))
        while True:
            candidates = np.argpartition(-scores, m - 1)[:m] if m < n else np.arange(n)
            ordered = candidates[np.lexsort((candidates, -scores[candidates]))]
            _, first = np.unique(self.entity[ordered], return_index=True)
            picked = ordered[np.sort(first)][:k]
            if len(picked) == k or m == n:
                return picked, scores[picked]
            m = min(n, 4 * m)

    def find(self, sha256: str) -> int | None:
        """The first row whose bytes or text have this sha256."""
        hits = np.flatnonzero(self.sha256 == sha256.encode("ascii"))
        return int(hits[0]) if len(hits) else None

    def of_entity(self, qid: str) -> range:
        start = int(np.searchsorted(self.qids, qid, side="left"))
        return range(start, int(np.searchsorted(self.qids, qid, side="right")))

    def text(self, row: int) -> str | None:
        return self.texts[row].as_py()


class Ranker:
    """Ranks one modality for concurrent queries together: each pass over the matrix serves every
    query that arrived while the previous pass ran. The product is bound by memory bandwidth (the
    whole matrix is read per pass), so a pass for several queries costs little more than one,
    and a lone query waits for nothing."""

    def __init__(self, rows: Rows, max_batch: int = 32) -> None:
        self.rows = rows
        self.max_batch = max_batch
        self.queue: queue.SimpleQueue[tuple[np.ndarray, int, Future] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name=f"rank-{rows.kind}", daemon=True)
        self.thread.start()

    def top(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        future: Future[tuple[np.ndarray, np.ndarray]] = Future()
        self.queue.put((query, k, future))
        return future.result()

    def _serve(self) -> None:
        while (first := self.queue.get()) is not None:
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    waiting = self.queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    self.queue.put(None)  # close after this batch
                    break
                batch.append(waiting)
            try:
                results = self.rows.top_many(np.stack([q for q, _, _ in batch]), [k for _, k, _ in batch])
            except Exception as error:  # the callers get it, the ranker keeps serving
                for _, _, future in batch:
                    future.set_exception(error)
                continue
            for (_, _, future), result in zip(batch, results):
                future.set_result(result)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


class Cells:
    """The model's geo-cells: label i is row i (token order), with its members' mean coordinates."""

    def __init__(self, cells: pa.Table) -> None:
        cells = cells.sort_by("cell")
        if cells.column("cell").to_pylist() != list(range(cells.num_rows)):
            raise ValueError(f"cell labels are not 0..{cells.num_rows - 1}")
        self.tokens = cells.column("token").to_pylist()
        self.lat = cells.column("mean_lat").to_numpy()
        self.lon = cells.column("mean_lon").to_numpy()

    def __len__(self) -> int:
        return len(self.tokens)

    @staticmethod
    @lru_cache(maxsize=4096)
    def polygon(token: str) -> list[list[float]]:
        return cell_polygon(token)

    def predict(self, logits: torch.Tensor, top: int) -> dict[str, Any]:
        probabilities = torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)
        order = np.lexsort((np.arange(len(probabilities)), -probabilities))[:top]
        cells = [
            {
                "token": self.tokens[i],
                "probability": round(float(probabilities[i]), 4),
                "lat": round(float(self.lat[i]), 5),
                "lon": round(float(self.lon[i]), 5),
                "polygon": self.polygon(self.tokens[i]),
            }
            for i in order
        ]
        return {"cells": cells, "lat": cells[0]["lat"], "lon": cells[0]["lon"]}


@dataclass(frozen=True)
class Release:
    """What a search runs against besides the index: the model that made it, its cells."""

    release: str
    model: str
    net: MLMNet
    classes: ClassVectors
    cells: pa.Table | None  # None for a model without location heads
    encoders: dict[str, Any]  # how queries are encoded, for /api/health


class Searcher:
    """Holds the index as arrays (not the table it was read from, which can then be freed)."""

    def __init__(
        self, release: Release, index: pa.Table, encode_text: EncodeText, encode_image: EncodeImage, top_cells: int = TOP_CELLS
    ) -> None:
        self.release = release
        self.net = release.net.eval()
        self.images = Rows(index, IMAGE)
        self.texts = Rows(index, TEXT)
        self.rankers = {IMAGE: Ranker(self.images), TEXT: Ranker(self.texts)}
        self.cells = Cells(release.cells) if release.cells is not None and self.net.image_location is not None else None
        self.encode_text = encode_text
        self.encode_image = encode_image
        self.top_cells = top_cells

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "release": self.release.release,
            "model": self.release.model,
            "images": len(self.images),
            "texts": len(self.texts),
            "cells": len(self.cells) if self.cells is not None else 0,
            "encoders": self.release.encoders,
        }

    def _answer(self, query: dict[str, Any], embedding: np.ndarray, rows: Rows, k: int,
                head: torch.nn.Module | None, item: tuple[Rows, int] | None) -> dict[str, Any]:
        picked, scores = self.rankers[rows.kind].top(embedding, k)
        results = [self._result(rows, int(row), float(score)) for row, score in zip(picked, scores)]
        location = None
        if self.cells is not None and head is not None:
            with torch.inference_mode():
                logits = head(torch.as_tensor(embedding[None], device=next(self.net.parameters()).device))[0]
            location = self.cells.predict(logits, self.top_cells)
        if item is not None:
            query["item"] = self._item(*item, location)
        return {"release": self.release.release, "model": self.release.model, "query": query,
                "results": results, "location": location}

    @staticmethod
    def _result(rows: Rows, row: int, score: float) -> dict[str, Any]:
        qid = str(rows.qids[row])
        result: dict[str, Any] = {"qid": qid, "label": rows.labels[row], "score": round(score, 4), "kind": rows.kind}
        if rows.kind == TEXT:
            result |= {"lang": rows.items[row], "text": rows.text(row)}
        else:
            result |= {"file_name": rows.items[row], "image_url": f"/image/{row}"}
        return result | {"entity_url": f"/entity/{qid}"}

    @staticmethod
    def _item(rows: Rows, row: int, location: dict[str, Any] | None) -> dict[str, Any]:
        lat, lon = float(rows.lat[row]), float(rows.lon[row])
        item: dict[str, Any] = {"qid": str(rows.qids[row]), "label": rows.labels[row], "kind": rows.kind,
                                "item": rows.items[row], "lat": lat, "lon": lon}
        if location is not None:
            distance = haversine_km(np.array([location["lat"]]), np.array([location["lon"]]), np.array([lat]), np.array([lon]))
            item["error_km"] = round(float(distance[0]), 1)
        return item

    def search_text(self, text: str, k: int) -> dict[str, Any]:
        """Images for a text; a summary of the release is embedded with its entity's classes."""
        row = self.texts.find(text_sha256(text))
        qid = str(self.texts.qids[row]) if row is not None else None
        features = self.encode_text(text)[None].astype(np.float32)
        embedding = embed_texts(self.net, features, self.release.classes.of(qid)[None])[0]
        query = {"kind": TEXT, "text": text, "item": None}
        item = (self.texts, row) if row is not None else None
        return self._answer(query, embedding, self.images, k, self.net.text_location, item)

    def search_image(self, upload: UploadedImage, k: int) -> dict[str, Any]:
        """Summaries for an image."""
        features = self.encode_image(upload.content)[None].astype(np.float32)
        embedding = embed_images(self.net, features)[0]
        sha256 = hashlib.sha256(upload.content).hexdigest()
        row = self.images.find(sha256)
        query = {"kind": IMAGE, "format": upload.format, "width": upload.width, "height": upload.height,
                 "bytes": len(upload.content), "sha256": sha256, "item": None}
        item = (self.images, row) if row is not None else None
        return self._answer(query, embedding, self.texts, k, self.net.image_location, item)

    def entity(self, qid: str) -> dict[str, Any] | None:
        """An entity's label, position, images and summaries, for its page; None if not indexed."""
        images, texts = self.images.of_entity(qid), self.texts.of_entity(qid)
        first = (self.images, images.start) if len(images) else (self.texts, texts.start) if len(texts) else None
        if first is None:
            return None
        rows, row = first
        return {
            "qid": qid,
            "label": rows.labels[row],
            "lat": float(rows.lat[row]),
            "lon": float(rows.lon[row]),
            "images": [{"file_name": self.images.items[r], "image_url": f"/image/{r}"} for r in images],
            "summaries": [{"lang": self.texts.items[r], "text": self.texts.text(r)} for r in texts],
        }

    def image_key(self, row: int) -> tuple[str, str] | None:
        """(qid, file name) of an image row; None when there is no such row."""
        if not 0 <= row < len(self.images):
            return None
        return str(self.images.qids[row]), self.images.items[row]

    def thumbnail_keys(self, answer: dict[str, Any]) -> list[tuple[str, str]]:
        return [(r["qid"], r["file_name"]) for r in answer["results"] if r["kind"] == IMAGE]

    def close(self) -> None:
        for ranker in self.rankers.values():
            ranker.close()
