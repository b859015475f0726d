"""The approximate (HNSW) index: exact top-1 on real probes, tombstoned deletes, encrypted
persistence reused after a restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import pytest

import faceledger
import faceledger.index.vector_index as vector_index
from faceledger.eval.embeddings import EmbeddingConfig, embed_images
from faceledger.index.vector_index import CollectionIndex
from faceledger.keys.templates import TemplateCipher

from conftest import data_path, image_bytes


@pytest.fixture(scope="module")
def lfw_sample(tmp_path_factory: pytest.TempPathFactory):
    root = data_path("lfw")
    folders = sorted(p for p in root.iterdir() if p.is_dir())[:80]
    paths = [f"{f.name}/{image.name}" for f in folders for image in sorted(f.iterdir())]
    embedded = embed_images(
        root, paths, config=EmbeddingConfig(face_choice="centre"), cache_dir=tmp_path_factory.mktemp("cache"), workers=2
    )
    return embedded.templates(flip=True)[embedded.found], embedded.vectors[embedded.found]


def test_hnsw_returns_the_exact_top1_for_real_lfw_probes(lfw_sample) -> None:
    templates, probes = lfw_sample
    rng = np.random.default_rng(0)
    synthetic = rng.multivariate_normal(templates.mean(0), np.cov(templates, rowvar=False), 20_000)
    gallery = np.concatenate([templates, synthetic]).astype(np.float32)
    seqs = np.arange(len(gallery))
    exact = CollectionIndex(128, seqs, gallery, 1, approximate=False)
    approximate = CollectionIndex(128, seqs, gallery, 1, approximate=True)
    assert approximate.approximate and len(approximate) == len(gallery)
    agree = 0
    for probe in probes:
        want = exact.search(probe[None, :], 5)[0]
        got = approximate.search(probe[None, :], 5)[0]
        agree += got[0].seq == want[0].seq
        # exact distances (to float32 rounding: 1e-5 in d^2 is 0.0006 similarity points)
        assert got[0].squared_distance == pytest.approx(want[0].squared_distance, abs=1e-5)
    assert agree == len(probes)


def test_tombstones_and_encrypted_save_load(tmp_path: Path, lfw_sample) -> None:
    templates, probes = lfw_sample
    index = CollectionIndex(128, np.arange(len(templates)), templates, 7, approximate=True)
    best = index.search(probes[:1], 1)[0][0].seq
    index.remove([best])
    assert best not in [n.seq for n in index.search(probes[:1], 10)[0]]
    assert len(index) == len(templates) - 1
    cipher = TemplateCipher(os.urandom(32))
    path = tmp_path / "c.faiss"
    index.save(path, cipher)
    assert templates[3].tobytes()[:32] not in path.read_bytes()  # no template in the clear on disk
    assert CollectionIndex.load(path, 8, cipher) is None  # another generation: rebuild instead
    loaded = CollectionIndex.load(path, 7, cipher)
    assert [n.seq for n in loaded.search(probes[:3], 5)[1]] == [n.seq for n in index.search(probes[:3], 5)[1]]
    assert best not in [n.seq for n in loaded.search(probes[:1], 10)[0]]


def _fused_gallery(templates: np.ndarray, extra: int) -> np.ndarray:
    """Fused-model-like templates, longer than the graph takes: real dlib templates (unit), then a
    correlated 64-d part (a fixed projection of the same face plus noise), weighted 0.8 / 0.2 as
    vision/fusion.py weighs its parts."""
    rng = np.random.default_rng(1)
    synthetic = rng.multivariate_normal(templates.mean(0), np.cov(templates, rowvar=False), extra)
    lead = np.concatenate([templates, synthetic])
    lead /= np.linalg.norm(lead, axis=1, keepdims=True)
    other = lead @ rng.normal(size=(128, 64)) + 0.05 * rng.normal(size=(len(lead), 64))
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    return np.hstack([np.sqrt(0.8) * lead, np.sqrt(0.2) * other]).astype(np.float32)


def test_long_templates_walk_a_projected_graph_and_rerank_on_the_full_ones(tmp_path: Path, lfw_sample) -> None:
    templates, _ = lfw_sample
    gallery = _fused_gallery(templates, 10_000)
    probes = gallery[: len(templates)] + np.float32(0.02) * np.random.default_rng(2).normal(size=(len(templates), 192))
    seqs = np.arange(len(gallery))
    exact = CollectionIndex(192, seqs, gallery, 1, approximate=False)
    prefixed = CollectionIndex(192, seqs, gallery, 3, approximate=True)
    graph = faiss.downcast_index(faiss.downcast_index(prefixed._index.index).base_index)
    assert isinstance(graph, faiss.IndexPreTransform) and graph.index.d == vector_index.GRAPH_DIMENSION
    assert len(prefixed) == len(gallery)
    found = wanted = 0
    for probe in probes.astype(np.float32):
        want = exact.search(probe[None, :], 5)[0]
        got = prefixed.search(probe[None, :], 5)[0]
        found += len({n.seq for n in got} & {n.seq for n in want})
        wanted += len(want)
        # distances are the full templates' (exact), not the leading part's
        assert got[0].squared_distance == pytest.approx(float(((gallery[got[0].seq] - probe) ** 2).sum()), abs=1e-5)
    assert found / wanted >= 0.99
    best = prefixed.search(probes[:1].astype(np.float32), 1)[0][0].seq
    prefixed.remove([best])
    cipher = TemplateCipher(os.urandom(32))
    prefixed.save(tmp_path / "f.faiss", cipher)
    loaded = CollectionIndex.load(tmp_path / "f.faiss", 3, cipher)
    assert loaded is not None
    again = loaded.search(probes[:3].astype(np.float32), 5)
    assert [[n.seq for n in row] for row in again] == [
        [n.seq for n in row] for row in prefixed.search(probes[:3].astype(np.float32), 5)
    ]
    assert best not in [n.seq for n in again[0]]
    loaded.add([len(gallery)], gallery[:1])  # a face added after loading is searchable at once
    assert loaded.search(gallery[:1], 2)[0][0].seq in (0, len(gallery))


def test_service_saves_and_reuses_the_approximate_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_index, "APPROXIMATE_FROM", 2)
    probe = image_bytes("facerec_examples", "obama", "obama2.jpg")
    with faceledger.open(tmp_path) as service:
        service.create_collection(collection_id="c")
        ids = [
            service.index_faces(collection_id="c", image=image_bytes("facerec_examples", *p))["FaceRecords"][0]["Face"][
                "FaceId"
            ]
            for p in (("obama", "obama.jpg"), ("biden", "biden.jpg"), ("rose_leslie", "img1.jpg"))
        ]
        assert (
            service.search_faces_by_image(collection_id="c", image=probe)["FaceMatches"][0]["Face"]["FaceId"] == ids[0]
        )
        assert service.indexes.for_search("c").approximate
        assert (tmp_path / "index" / "c.faiss").exists()
        # an add after the save: applied in step, saved again at close
        ids.append(
            service.index_faces(collection_id="c", image=image_bytes("facerec_examples", "biden", "biden2.jpg"))[
                "FaceRecords"
            ][0]["Face"]["FaceId"]
        )
    loads = []
    with faceledger.open(tmp_path) as service:
        real_load = service.indexes._load
        service.indexes._load = lambda collection: loads.append(collection) or real_load(collection)
        biden = service.search_faces(collection_id="c", face_id=ids[1])["FaceMatches"]
        assert [m["Face"]["FaceId"] for m in biden] == [ids[3]]
        assert loads == []  # read from the saved index, not rebuilt from the store


def test_a_saved_index_is_sealed_in_parts_that_cannot_be_moved(
    tmp_path: Path, lfw_sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AES-GCM seals under 2 GiB at once, and a million fused templates make 4.9 GB: the saved
    index is sealed in parts (here of 64 KiB), each bound to its place."""
    from faceledger.errors import InternalServerError

    monkeypatch.setattr(vector_index, "SEALED_PART_BYTES", 1 << 16)
    templates, probes = lfw_sample
    index = CollectionIndex(128, np.arange(len(templates)), templates, 4, approximate=True)
    cipher, path = TemplateCipher(os.urandom(32)), tmp_path / "parts.faiss"
    index.save(path, cipher)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["parts"] >= 3
    loaded = CollectionIndex.load(path, 4, cipher)
    assert [n.seq for n in loaded.search(probes[:3], 5)[2]] == [n.seq for n in index.search(probes[:3], 5)[2]]
    raw = path.read_bytes()
    first = 8 + int.from_bytes(raw[:8], "big")
    second = first + 8 + int.from_bytes(raw[first : first + 8], "big")
    path.write_bytes(raw[first:second] + raw[:first] + raw[second:])  # parts 1 and 2 swapped
    with pytest.raises(InternalServerError, match="does not decrypt"):
        CollectionIndex.load(path, 4, cipher)
    for damaged, said in ((raw[:second], "cut short"), (raw[:-5], "cut short"), (raw + b"more", "more than")):
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match=said):
            CollectionIndex.load(path, 4, cipher)
    # a damaged saved index is only a cache: the registry rebuilds from the store instead
    registry = vector_index.VectorIndexRegistry(
        lambda _: 128,
        lambda _: (np.arange(len(templates)), templates, 4),
        lambda _: 4,
        persist_dir=tmp_path,
        cipher=lambda: cipher,
    )
    path.with_name("parts.faiss").write_bytes(raw[:-5])
    rebuilt = registry.for_search("parts")
    assert len(rebuilt) == len(templates) and rebuilt.search(probes[:1], 1)[0]


def test_an_index_saved_whole_by_an_earlier_version_still_loads(tmp_path: Path, lfw_sample) -> None:
    import faiss

    templates, probes = lfw_sample
    index = CollectionIndex(128, np.arange(len(templates)), templates, 2, approximate=True)
    cipher, path = TemplateCipher(os.urandom(32)), tmp_path / "old.faiss"
    sealed = cipher.seal_bytes("vector index old generation 2", faiss.serialize_index(index._index).tobytes())
    path.write_bytes(sealed)
    path.with_suffix(".json").write_text(json.dumps({"generation": 2, "removed": [], "approximate": True}))
    loaded = CollectionIndex.load(path, 2, cipher)
    assert [n.seq for n in loaded.search(probes[:2], 5)[1]] == [n.seq for n in index.search(probes[:2], 5)[1]]
