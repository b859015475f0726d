"""Per-collection vector search, always rebuildable from the store.

Each collection's index remembers the store generation it reflects. Before every search the
generation is compared with the store's (one indexed read): when another process or node changed
the collection, the index first catches up from the store's change log (the faces added and
removed since), or, where the log no longer reaches back, is rebuilt from the store; so nothing
is searchable that is not in the store and nothing in the store is missing from search. Changes
made through this process are applied in step, and a store that pushes changes (PostgreSQL's
NOTIFY) has them applied as they are announced (:meth:`VectorIndexRegistry.refresh`), before
the next search needs them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from faceledger.errors import FaceledgerError
from faceledger.keys.files import write_private_file
from faceledger.store import FaceChange

log = logging.getLogger(__name__)
EmbeddingLoader = Callable[[str], tuple[np.ndarray, np.ndarray, int]]
# (collection id, generation) -> (added index ids, their embeddings, removed index ids, generation
# now), or None when the change log cannot say
ChangeLoader = Callable[[str, int], "IndexChanges | None"]


@dataclass(frozen=True)
class IndexChanges:
    """A collection's faces added and removed since some generation, in the clear."""

    added_seqs: list[int]
    added_vectors: np.ndarray
    removed_seqs: list[int]
    generation: int


class Sealer(Protocol):
    """Encrypts what is written to disk (the store's template cipher)."""

    def seal_bytes(self, label: str, data: bytes) -> bytes: ...

    def open_bytes(self, label: str, sealed: bytes) -> bytes: ...


@dataclass(frozen=True)
class Neighbour:
    """An index id (the store's face ``seq``) and its squared Euclidean distance to the probe."""

    seq: int
    squared_distance: float


# Below this many faces an exact (flat) search takes under ~2 ms on 2 cores; above it, HNSW.
APPROXIMATE_FROM = 50_000
HNSW_NEIGHBOURS = 48  # M: graph degree; more is better recall, more memory
HNSW_BUILD_DEPTH = 160  # efConstruction: a better graph is worth more than a deeper search
# efSearch: recall@10 0.992 against exact search at p99 1.3 ms over 1,000,000 faces
# (benchmarks/search_scale.py)
HNSW_SEARCH_DEPTH = 192
# The graph is walked on 8-bit codes (a quarter of the memory traffic of float32, 1.5-2x faster),
# then this many times the requested candidates are re-ranked on the full float32 vectors.
RERANK_FACTOR = 2
SEALED_PART_BYTES = 1 << 30  # a saved index is sealed in parts of at most this many bytes
# Longer templates (a fused model's 1,152 floats, faceres' 1,024) are projected by PCA, learnt from
# the vectors at hand, onto this many dimensions for the graph, and more candidates are re-ranked
# on the full vectors: over 200,000 fused templates, recall@10 0.997 at p99 1.1 ms, where a graph
# on dlib's part of the template alone needed 40x re-ranking for 0.991 (benchmarks/search_scale.py).
GRAPH_DIMENSION = 128
PROJECTED_RERANK_FACTOR = 5
# A projected graph is walked deeper: over a million fused templates recall@10 was 0.988 at
# efSearch 256, 0.992 at 320 (p99 2.7-4.7 ms on two cores, noisy), 0.993 at 384
# (benchmarks/search_scale.py --fused).
PROJECTED_SEARCH_DEPTH = 320


class _ReadWriteLock:
    """Searches share an index; a change (add, remove) has it alone, before searches that come
    after it. FAISS searches run in parallel (they release the interpreter lock) while an addition
    may move the vectors they read, and a removal compacts them."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._changed:
            while self._writing or self._writers_waiting:
                self._changed.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._changed:
                self._readers -= 1
                if not self._readers:
                    self._changed.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._changed:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._changed.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._changed:
                self._writing = False
                self._changed.notify_all()


class CollectionIndex:
    """Search over one collection's embeddings: exact (FAISS flat) for small collections, HNSW
    above ``APPROXIMATE_FROM`` faces.

    The HNSW graph is built and walked on 8-bit scalar-quantised vectors (templates longer than
    ``GRAPH_DIMENSION`` projected onto that many principal components first); the candidates it
    finds are re-ranked on the full vectors, so the distances reported for the faces returned are
    exact: only *which* faces come back is approximate (measured by benchmarks/search_scale.py).
    HNSW cannot delete, so deleted faces become tombstones, filtered out of every result; past
    10% of the index they make it ask for a rebuild.
    """

    def __init__(
        self, dimension: int, seqs: np.ndarray, vectors: np.ndarray, generation: int, *, approximate: bool | None = None
    ) -> None:
        self.approximate = len(seqs) >= APPROXIMATE_FROM if approximate is None else approximate
        self.approximate = self.approximate and len(seqs) > 0  # the quantiser learns from the vectors
        if self.approximate:
            walked = min(dimension, GRAPH_DIMENSION)
            graph = faiss.IndexHNSWSQ(walked, faiss.ScalarQuantizer.QT_8bit, HNSW_NEIGHBOURS)
            graph.hnsw.efConstruction = HNSW_BUILD_DEPTH
            graph.hnsw.efSearch = HNSW_SEARCH_DEPTH
            if walked < dimension:
                projected = faiss.IndexPreTransform(faiss.PCAMatrix(dimension, walked), graph)
                reranked = faiss.IndexRefineFlat(projected)
            else:
                reranked = faiss.IndexRefineFlat(graph)
            reranked.k_factor = _rerank_factor(dimension)
            self._index = faiss.IndexIDMap2(reranked)
            # The quantiser's per-dimension ranges come from the vectors at hand; a later face
            # outside them is clipped in the graph only, never in the re-ranked distances.
            self._index.train(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dimension))
        else:
            self._index = faiss.IndexIDMap2(faiss.IndexFlatL2(dimension))
        if len(seqs):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(seqs, dtype=np.int64))
        self.generation = generation
        self.removed: set[int] = set()
        self.dirty = True  # differs from any saved copy
        self._lock = _ReadWriteLock()

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self.removed)

    @property
    def needs_rebuild(self) -> bool:
        return len(self.removed) > 0.1 * max(1, int(self._index.ntotal))

    def add(self, seqs: list[int], vectors: np.ndarray) -> None:
        if seqs:
            with self._lock.writing():
                self._index.add_with_ids(
                    np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(seqs, dtype=np.int64)
                )
                self.dirty = True

    def remove(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock.writing():
            if self.approximate:
                self.removed.update(int(s) for s in seqs)
            else:
                self._index.remove_ids(np.asarray(seqs, dtype=np.int64))
            self.dirty = True

    def search(self, probes: np.ndarray, k: int) -> list[list[Neighbour]]:
        """The ``k`` nearest faces of each probe row, nearest first."""
        with self._lock.reading():
            return self._search(probes, k)

    def _search(self, probes: np.ndarray, k: int) -> list[list[Neighbour]]:
        k = min(k, len(self))
        if k == 0:
            return [[] for _ in range(len(probes))]
        wanted = min(int(self._index.ntotal), k + len(self.removed))
        if self.approximate:
            inner = faiss.downcast_index(self._index.index)
            if isinstance(inner, faiss.IndexRefine):
                inner.k_factor = _rerank_factor(inner.d)
                wanted_from_graph = wanted * int(inner.k_factor)
                inner = faiss.downcast_index(inner.base_index)
                depth = HNSW_SEARCH_DEPTH
                if isinstance(inner, faiss.IndexPreTransform):
                    inner, depth = faiss.downcast_index(inner.index), PROJECTED_SEARCH_DEPTH
            else:  # saved by an earlier version: a plain HNSW over full vectors
                wanted_from_graph, depth = wanted, HNSW_SEARCH_DEPTH
            inner.hnsw.efSearch = max(depth, wanted_from_graph)
        distances, ids = self._index.search(np.ascontiguousarray(probes, dtype=np.float32), wanted)
        return [
            [
                Neighbour(int(i), float(d))
                for d, i in zip(row_d, row_i, strict=True)
                if i >= 0 and int(i) not in self.removed
            ][:k]
            for row_d, row_i in zip(distances, ids, strict=True)
        ]

    def vectors(self, seqs: list[int]) -> np.ndarray:
        """The full templates of faces in the index (float32 rows, in the order of ``seqs``)."""
        if not seqs:
            return np.empty((0, self._index.d), dtype=np.float32)
        with self._lock.reading():
            return np.stack([self._index.reconstruct(int(seq)) for seq in seqs])

    def save(self, path: Path, cipher: Sealer) -> None:
        """Write the index, encrypted with ``cipher`` (it holds every template in the clear
        otherwise) and bound to its collection and generation, atomically. It is sealed in parts
        of at most ``SEALED_PART_BYTES`` (AES-GCM takes under 2 GiB at once; a million fused
        templates make 4.9 GB), each bound to its place, so that no part can be dropped, repeated
        or moved."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock.reading():
            data = memoryview(faiss.serialize_index(self._index))
        parts = max(1, -(-len(data) // SEALED_PART_BYTES))
        label = _label(path, self.generation)

        def sealed_parts() -> Iterator[bytes]:
            for n in range(parts):
                piece = bytes(data[n * SEALED_PART_BYTES : (n + 1) * SEALED_PART_BYTES])
                sealed = cipher.seal_bytes(_part_label(label, n, parts), piece)
                yield len(sealed).to_bytes(8, "big") + sealed

        meta = {
            "generation": self.generation,
            "removed": sorted(self.removed),
            "approximate": self.approximate,
            "parts": parts,
        }
        write_private_file(path, sealed_parts())
        write_private_file(path.with_suffix(".json"), json.dumps(meta).encode())
        self.dirty = False

    @classmethod
    def load(cls, path: Path, generation: int, cipher: Sealer) -> CollectionIndex | None:
        """The saved index if it reflects store ``generation``, else None (rebuild instead)."""
        meta_path = path.with_suffix(".json")
        if not path.exists() or not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        if meta.get("generation") != generation:
            return None
        index = cls.__new__(cls)
        label = _label(path, generation)
        if "parts" in meta:
            pieces = _opened_parts(path, label, int(meta["parts"]), cipher)
            index._index = _read_index(pieces)
            if next(pieces, None) is not None:  # also runs the check for bytes after the last part
                raise ValueError(f"{path} holds parts the index does not use")
        else:  # saved by an earlier version: one sealed whole
            index._index = _read_index(iter([memoryview(cipher.open_bytes(label, path.read_bytes()))]))
        index.approximate = bool(meta["approximate"])
        index.generation = generation
        index.removed = set(meta["removed"])
        index.dirty = False
        index._lock = _ReadWriteLock()
        return index


def _rerank_factor(dimension: int) -> int:
    return RERANK_FACTOR if dimension <= GRAPH_DIMENSION else PROJECTED_RERANK_FACTOR


def _opened_parts(path: Path, label: str, parts: int, cipher: Sealer) -> Iterator[memoryview]:
    """The decrypted parts of a saved index, one at a time (only one is held in memory); a
    file cut short, or longer than its parts, raises ValueError."""
    with path.open("rb") as handle:
        for n in range(parts):
            prefix = handle.read(8)
            size = int.from_bytes(prefix, "big")
            sealed = handle.read(size) if len(prefix) == 8 else b""
            if not size or len(sealed) != size:
                raise ValueError(f"{path} is cut short in sealed part {n + 1} of {parts}")
            yield memoryview(cipher.open_bytes(_part_label(label, n, parts), sealed))
        if handle.read(1):
            raise ValueError(f"{path} holds more than its {parts} sealed parts")


def _part_label(label: str, n: int, parts: int) -> str:
    return label if parts == 1 else f"{label} part {n + 1} of {parts}"


def _read_index(pieces: Iterator[memoryview]) -> faiss.Index:
    """Deserialise an index by streaming ``pieces`` to FAISS. ``deserialize_index`` would first
    copy all of it into a buffer of its own: at a million faces that is 877 MiB more at the peak
    (2.7 GiB instead of 1.8), and slower."""
    current, position = memoryview(b""), 0

    def read(size: int) -> bytes:
        nonlocal current, position
        out = bytearray()
        while len(out) < size:
            if position == len(current):
                current, position = next(pieces, memoryview(b"")), 0
                if not len(current):
                    break
            take = current[position : position + size - len(out)]
            out += take
            position += len(take)
        return bytes(out)

    return faiss.read_index(faiss.PyCallbackIOReader(read, 1 << 24))


def _label(path: Path, generation: int) -> str:
    return f"vector index {path.stem} generation {generation}"


class VectorIndexRegistry:
    """The indexes of all collections of one store, built lazily and kept in step."""

    def __init__(
        self,
        dimension: Callable[[str], int],
        load: EmbeddingLoader,
        current_generation: Callable[[str], int | None],
        persist_dir: Path | None = None,
        cipher: Callable[[], Sealer] | None = None,
        changes: ChangeLoader | None = None,
    ) -> None:
        """``dimension``: a collection's template length (its face model's). ``persist_dir``: where
        approximate (HNSW) indexes are saved, so that a restart loads them instead of rebuilding;
        a saved index is used only if it reflects the store's current generation. ``changes``:
        what changed since a generation (without it, every change made elsewhere is a rebuild)."""
        self._dimension = dimension
        self._load = load
        self._changes = changes
        self._current_generation = current_generation
        self._persist_dir = persist_dir if cipher is not None else None
        self._cipher = cipher
        self._indexes: dict[str, CollectionIndex] = {}
        self._lock = threading.RLock()

    def _path(self, collection_id: str) -> Path | None:
        return None if self._persist_dir is None else self._persist_dir / f"{collection_id}.faiss"

    def for_search(self, collection_id: str) -> CollectionIndex:
        """The collection's index, first caught up with the store (or rebuilt) if it has moved on."""
        generation = self._current_generation(collection_id)
        with self._lock:
            index = self._indexes.get(collection_id)
            if index is not None and generation is not None and index.generation != generation:
                index = self._caught_up(collection_id, index)  # may pass ``generation``: newer still
            if index is None or generation is None:
                path = self._path(collection_id)
                index = self._saved(collection_id, path, generation)
                if index is None:
                    seqs, vectors, generation = self._load(collection_id)
                    index = CollectionIndex(self._dimension(collection_id), seqs, vectors, generation)
                    if index.approximate and path is not None:
                        index.save(path, self._cipher())  # type: ignore[misc]
                self._indexes[collection_id] = index
            return index

    def refresh(self, collection_id: str | None) -> None:
        """Bring the loaded index of ``collection_id`` (None: of every collection) in step with
        the store now, as a search would; a collection not loaded is left until it is searched."""
        with self._lock:
            loaded = list(self._indexes) if collection_id is None else [collection_id]
        for name in loaded:
            generation = self._current_generation(name)
            with self._lock:
                index = self._indexes.get(name)
                if index is None or index.generation == generation:
                    continue
                if generation is None:  # deleted
                    del self._indexes[name]
                else:
                    self._caught_up(name, index)

    def _caught_up(self, collection_id: str, index: CollectionIndex) -> CollectionIndex | None:
        """``index`` with the changes made elsewhere since its generation applied, or None (and
        dropped, to be rebuilt) when the store's change log cannot say what they were."""
        changes = self._changes(collection_id, index.generation) if self._changes is not None else None
        if changes is None:
            self._indexes.pop(collection_id, None)
            return None
        index.remove(changes.removed_seqs)
        index.add(changes.added_seqs, changes.added_vectors)
        index.generation = changes.generation
        if index.needs_rebuild:
            self._indexes.pop(collection_id, None)
            return None
        return index

    def _saved(self, collection_id: str, path: Path | None, generation: int | None) -> CollectionIndex | None:
        """The saved index of this generation, if there is one that loads: a damaged file, or one
        sealed under another key, is only a cache, rebuilt from the store instead."""
        if path is None or generation is None:
            return None
        try:
            return CollectionIndex.load(path, generation, self._cipher())  # type: ignore[misc]
        except (ValueError, RuntimeError, OSError, FaceledgerError) as error:
            log.warning("saved index of %s not used (%s): rebuilding it from the store", collection_id, error)
            return None

    def apply(self, change: FaceChange, vectors: np.ndarray | None = None) -> None:
        """Apply a committed change of the store; ``vectors`` are the added faces' embeddings,
        in the order of ``change.seqs``.

        If this index was not at the change's generation before (another writer came between),
        it is dropped and rebuilt on the next search instead.
        """
        with self._lock:
            index = self._indexes.get(change.collection_id)
            if index is None or index.generation >= change.after:  # generations only grow: applied already
                return
            if index.generation != change.before:
                del self._indexes[change.collection_id]
                return
            if change.added and vectors is not None:
                index.add(list(change.seqs.values()), vectors)
            elif not change.added:
                index.remove(list(change.seqs.values()))
            index.generation = change.after
            if index.needs_rebuild:
                del self._indexes[change.collection_id]

    def drop(self, collection_id: str) -> None:
        with self._lock:
            self._indexes.pop(collection_id, None)
            path = self._path(collection_id)
            if path is not None:
                for stale in (path, path.with_suffix(".json")):
                    stale.unlink(missing_ok=True)

    def forget_saved(self) -> None:
        """Delete every saved index (after a template key rotation they no longer decrypt); they
        are rebuilt from the store when next needed."""
        with self._lock:
            if self._persist_dir is not None and self._persist_dir.exists():
                for saved in self._persist_dir.iterdir():
                    saved.unlink()
            for index in self._indexes.values():
                index.dirty = True

    def save(self) -> None:
        """Save every approximate index changed since it was last saved (at shutdown)."""
        with self._lock:
            for collection_id, index in self._indexes.items():
                path = self._path(collection_id)
                if index.approximate and index.dirty and path is not None:
                    index.save(path, self._cipher())  # type: ignore[misc]
