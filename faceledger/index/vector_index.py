"""Per-collection vector search, always rebuildable from the store.

Each collection's index remembers the store generation it reflects. Before every search the
generation is compared with the store's (one indexed SQLite read): when another process or thread
changed the collection, the index is rebuilt from the store, so nothing is searchable that is not
in the store and nothing in the store is missing from search. Changes made through this process
are applied in step instead, without a rebuild.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

EmbeddingLoader = Callable[[str], tuple[np.ndarray, np.ndarray, int]]


@dataclass(frozen=True)
class Neighbour:
    """An index id (the store's face ``seq``) and its squared Euclidean distance to the probe."""

    seq: int
    squared_distance: float


class CollectionIndex:
    """Exact L2 search over one collection's embeddings (FAISS flat index)."""

    def __init__(self, dimension: int, seqs: np.ndarray, vectors: np.ndarray, generation: int) -> None:
        self._index = faiss.IndexIDMap2(faiss.IndexFlatL2(dimension))
        if len(seqs):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), seqs)
        self.generation = generation

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, seqs: list[int], vectors: np.ndarray) -> None:
        if seqs:
            self._index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(seqs, dtype=np.int64)
            )

    def remove(self, seqs: list[int]) -> None:
        if seqs:
            self._index.remove_ids(np.asarray(seqs, dtype=np.int64))

    def search(self, probes: np.ndarray, k: int) -> list[list[Neighbour]]:
        """The ``k`` nearest faces of each probe row, nearest first."""
        k = min(k, len(self))
        if k == 0:
            return [[] for _ in range(len(probes))]
        distances, ids = self._index.search(np.ascontiguousarray(probes, dtype=np.float32), k)
        return [
            [Neighbour(int(i), float(d)) for d, i in zip(row_d, row_i) if i >= 0]
            for row_d, row_i in zip(distances, ids)
        ]


class VectorIndexRegistry:
    """The indexes of all collections of one store, built lazily and kept in step."""

    def __init__(self, dimension: int, load: EmbeddingLoader, current_generation: Callable[[str], int | None]) -> None:
        self._dimension = dimension
        self._load = load
        self._current_generation = current_generation
        self._indexes: dict[str, CollectionIndex] = {}
        self._lock = threading.RLock()

    def for_search(self, collection_id: str) -> CollectionIndex:
        """The collection's index, rebuilt first if the store has moved on."""
        generation = self._current_generation(collection_id)
        with self._lock:
            index = self._indexes.get(collection_id)
            if index is None or index.generation != generation:
                seqs, vectors, generation = self._load(collection_id)
                index = CollectionIndex(self._dimension, seqs, vectors, generation)
                self._indexes[collection_id] = index
            return index

    def apply(
        self,
        collection_id: str,
        before: int,
        after: int,
        *,
        added: tuple[list[int], np.ndarray] | None = None,
        removed: list[int] | None = None,
    ) -> None:
        """Apply a committed change that moved the store from generation ``before`` to ``after``.

        If this index was not at ``before`` (another writer came between), it is dropped and
        rebuilt on the next search instead.
        """
        with self._lock:
            index = self._indexes.get(collection_id)
            if index is None:
                return
            if index.generation != before:
                del self._indexes[collection_id]
                return
            if added is not None:
                index.add(*added)
            if removed:
                index.remove(removed)
            index.generation = after

    def drop(self, collection_id: str) -> None:
        with self._lock:
            self._indexes.pop(collection_id, None)
