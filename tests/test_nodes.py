"""Several processes on one store (nodes of a server, or CLI commands beside a server): each
keeps its vector indexes in step with what the others commit, without rereading a collection.
Tests with real ``serve`` processes and boto3 are in tests/test_server_nodes.py."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

import faceledger
from faceledger.errors import DataDirectoryError
from faceledger.service import FaceService

from conftest import image_bytes

OBAMA = image_bytes("facerec_examples", "obama", "obama.jpg")
OBAMA_PROBE = image_bytes("facerec_examples", "_test_unlabeled", "obama1.jpg")
BIDEN = image_bytes("facerec_examples", "biden", "biden.jpg")
BIDEN_PROBE = image_bytes("facerec_examples", "biden", "biden2.jpg")


def _found(service: FaceService, probe: bytes) -> set[str]:
    result = service.search_faces_by_image(collection_id="c", image=probe, face_match_threshold=80)
    return {match["Face"]["ExternalImageId"] for match in result["FaceMatches"]}


def _index(service: FaceService, image: bytes, name: str) -> str:
    return service.index_faces(collection_id="c", image=image, external_image_id=name)["FaceRecords"][0]["Face"][
        "FaceId"
    ]


def _count_full_loads(service: FaceService) -> list[str]:
    """The collections ``service`` reads whole to build an index, from now on."""
    loads: list[str] = []
    read_whole = service.indexes._load

    def counted(collection_id: str):
        loads.append(collection_id)
        return read_whole(collection_id)

    service.indexes._load = counted
    return loads


def test_a_collection_deleted_and_created_again_elsewhere_is_not_searched_with_its_old_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with faceledger.open(data) as one, faceledger.open(data) as other:
        other.create_collection(collection_id="c")
        _index(other, OBAMA, "obama")
        assert _found(other, OBAMA_PROBE) == {"obama"}
        # the same number of changes to a new collection of the same name
        one.delete_collection(collection_id="c")
        one.create_collection(collection_id="c")
        _index(one, BIDEN, "biden")
        assert _found(other, BIDEN_PROBE) == {"biden"}
        assert _found(other, OBAMA_PROBE) == set()


def test_changes_made_elsewhere_are_applied_to_an_index_without_reading_the_collection_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with faceledger.open(data) as one, faceledger.open(data) as other:
        one.create_collection(collection_id="c")
        _index(one, OBAMA, "obama")
        assert _found(other, OBAMA_PROBE) == {"obama"}
        loads = _count_full_loads(other)
        biden = _index(one, BIDEN, "biden")
        assert _found(other, BIDEN_PROBE) == {"biden"}
        one.delete_faces(collection_id="c", face_ids=[biden])
        assert _found(other, BIDEN_PROBE) == set() and _found(other, OBAMA_PROBE) == {"obama"}
        # a face added and removed between two of its searches is in neither
        _index(one, BIDEN, "biden")
        one.delete_faces(collection_id="c", face_ids=[_index(one, BIDEN, "biden-again")])
        assert _found(other, BIDEN_PROBE) == {"biden"}
        assert loads == []
        assert len(other.indexes.for_search("c")) == one.describe_collection(collection_id="c")["FaceCount"] == 2


@pytest.mark.backends("postgresql")
def test_a_change_committed_on_one_node_reaches_another_nodes_index_within_a_second(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with faceledger.open(data) as one, faceledger.open(data) as other:
        one.create_collection(collection_id="c")
        _index(one, OBAMA, "obama")
        other.indexes.for_search("c")  # loaded, as a serving node's are
        loads = _count_full_loads(other)
        stop_watching = other.store.watch_changes(other.indexes.refresh)
        try:
            time.sleep(0.3)  # the watcher is listening

            def applied_within(seconds: float) -> float:
                """How long until ``other``'s index is at the store's generation, without a search."""
                start = time.monotonic()
                while time.monotonic() - start < seconds:
                    if other.indexes._indexes["c"].generation == one.store.generation("c"):
                        return time.monotonic() - start
                    time.sleep(0.005)
                raise AssertionError(f"the change did not reach the other node within {seconds} s")

            biden = _index(one, BIDEN, "biden")
            assert applied_within(1.0) < 1.0
            assert len(other.indexes._indexes["c"]) == 2
            one.delete_faces(collection_id="c", face_ids=[biden])
            assert applied_within(1.0) < 1.0
            assert len(other.indexes._indexes["c"]) == 1
            assert loads == []
        finally:
            stop_watching()


@pytest.mark.backends("postgresql")
def test_a_node_must_hold_the_keys_the_store_is_used_with(tmp_path: Path, postgresql_server) -> None:
    url = postgresql_server.new_database()
    first = tmp_path / "first"
    with faceledger.open(first, database_url=url) as service:
        service.create_collection(collection_id="c")
        _index(service, OBAMA, "obama")
    second = tmp_path / "second"
    for missing in ("template.key", "ledger.key", "secrets.key"):
        with pytest.raises(DataDirectoryError, match=f"copy {missing} \\(mode 0600\\) from the data directory"):
            faceledger.open(second, database_url=url)
        shutil.copy2(first / missing, second / missing)
    (second / "secrets.key").write_bytes(os.urandom(32))  # another key than the store's
    with pytest.raises(DataDirectoryError, match="secrets.key .* is not the key the store"):
        faceledger.open(second, database_url=url)
    shutil.copy2(first / "secrets.key", second / "secrets.key")
    with faceledger.open(second, database_url=url) as service:
        assert _found(service, OBAMA_PROBE) == {"obama"}
        assert service.ledger.verify() == []
