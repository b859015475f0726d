"""Every operation goes through the one runner: each public method of the service leaves exactly
one ledger entry, named in the one registry of operations, whether it succeeds or is refused."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from faceledger.errors import FaceledgerError
from faceledger.service import FaceService
from faceledger.service.access import PERMISSIONS, Role
from faceledger.service.operations import OPERATIONS, Door, offered_at
from faceledger.vision.model import DlibResNetModel

from conftest import data_path as image_path
from conftest import image_bytes

# Public methods that are not operations, and why none needs a ledger entry of its own.
NOT_OPERATIONS = {
    "close": "closes the store",
    "record_failure": "writes the entry of a call refused on the wire",
    "threshold_table": "reads the shipped or calibrated threshold table (no biometric data)",
    "default_search_threshold": "reads the threshold table",
    "resolve_face_ids": "turns id prefixes the CLI was given into face ids; the operation given them is ledgered",
    "find_indexed_image": "lets a folder index skip files it indexed before; the IndexFaces it saves is the operation",
    "index_image": "IndexFaces with a typed result (bulk indexing); checked below as IndexFaces",
    "console_caller": "reads who a console session token signs in; what the session then does is ledgered",
    "run_video_job": "runs a job a Start operation recorded; its end is ledgered as FaceDetectionJob/FaceSearchJob",
}


def _arguments(face_id: str, key: dict[str, str]) -> dict[str, dict[str, Any]]:
    """One call per operation (some succeed, some are refused: either way, one entry)."""
    photo = image_bytes("facerec_examples", "obama", "obama2.jpg")
    arn = "arn:aws:rekognition:local:000000000000:collection/c"
    return {
        "create_collection": {"collection_id": "d"},
        "describe_collection": {"collection_id": "c"},
        "list_collections": {},
        "delete_collection": {"collection_id": "nope"},
        "tag_resource": {"resource_arn": arn, "tags": {"k": "v"}},
        "untag_resource": {"resource_arn": arn, "tag_keys": ["k"]},
        "list_tags_for_resource": {"resource_arn": "not an arn"},
        "set_threshold_table": {"collection_id": "c", "table": DlibResNetModel().threshold_table()},
        "detect_faces": {"image": photo},
        "compare_faces": {"source_image": photo, "target_image": photo},
        "index_faces": {"collection_id": "c", "image": b"not an image"},
        "list_faces": {"collection_id": "c"},
        "delete_faces": {"collection_id": "c", "face_ids": ["00000000-0000-0000-0000-000000000000"]},
        "search_faces": {"collection_id": "c", "face_id": face_id},
        "search_faces_by_image": {"collection_id": "c", "image": photo},
        "search_all_faces_by_image": {"collection_id": "c", "image": photo},
        "search_users": {"collection_id": "c", "face_id": face_id},
        "search_users_by_image": {"collection_id": "c", "image": photo},
        "create_user": {"collection_id": "c", "user_id": "u2"},
        "delete_user": {"collection_id": "c", "user_id": "nobody"},
        "list_users": {"collection_id": "c"},
        "associate_faces": {"collection_id": "c", "user_id": "u", "face_ids": [face_id]},
        "disassociate_faces": {"collection_id": "c", "user_id": "u", "face_ids": [face_id]},
        "put_collection_policy": {"collection_id": "c", "max_results": 50},
        "update_collection_policy": {"collection_id": "c", "max_results": 40},
        "get_collection_policy": {"collection_id": "c"},
        "put_collection_cohort": {"collection_id": "c", "cohort_collection_id": "c"},
        "get_collection_cohort": {"collection_id": "c"},
        "record_consent": {"collection_id": "c", "external_image_id": "x", "basis": "b", "reference": "r"},
        "withdraw_consent": {"collection_id": "c", "consent_id": "unknown"},
        "list_consents": {"collection_id": "c"},
        "purge": {},
        "decide_review": {"case_id": "unknown", "face_id": face_id, "decision": "confirm", "note": "n"},
        "get_review_case": {"case_id": "unknown"},
        "list_review_cases": {},
        "start_face_detection": {"video": Path(image_path("facerec_examples", "obama", "obama.jpg"))},
        "get_face_detection": {"job_id": "unknown"},
        "start_face_search": {"video": Path("/no/such/video.mp4"), "collection_id": "c"},
        "get_face_search": {"job_id": "unknown"},
        "erase_faces": {"collection_id": "c", "face_ids": ["00000000-0000-0000-0000-000000000000"]},
        "list_ledger_entries": {"operation": "IndexFaces"},
        "verify_ledger": {},
        "start_console_session": {"access_key_id": key["AccessKeyId"], "secret": key["SecretAccessKey"]},
        "end_console_session": {"session_token": "no such session"},
        "create_access_key": {"role": "searcher"},
        "set_access_key_enabled": {"access_key_id": "FLUNKNOWN", "enabled": False},
        "delete_access_key": {"access_key_id": "FLUNKNOWN"},
        "rotate_template_key": {},
        "export_ledger": {"write": lambda entry: None},
        "check_data_directory": {},
        "migrate_collection": {"collection_id": "c", "face_model": "nope"},
        "migrate_store": {"to": "/not/a/postgresql/url"},
        "register_fused_face_model": {
            "name": "f",
            "parts": ["dlib-resnet-v1", "nope"],
            "weights": [1, 1],
            "reference_cosine": 0.5,
        },
        "register_face_model": {
            "name": "mine",
            "onnx_file": "/no/such.onnx",
            "spec": {"input_size": 112, "dimension": 8},
        },
    }


def _public_methods() -> list[str]:
    return sorted(name for name, _ in inspect.getmembers(FaceService, inspect.isfunction) if not name.startswith("_"))


def test_every_operation_is_a_method_and_every_method_an_operation() -> None:
    methods = set(_public_methods()) - set(NOT_OPERATIONS)
    # the end of a job is no method: run_video_job ledgers it as whoever started the job
    assert methods == {operation.method for operation in OPERATIONS.values() if operation.door is not Door.JOB}
    assert PERMISSIONS[Role.ADMIN] == set(OPERATIONS)
    assert set().union(*(offered_at(door) for door in Door)) == set(OPERATIONS)


def test_every_public_method_leaves_exactly_one_ledger_entry(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    indexed = service.index_faces(collection_id="c", image=image_bytes("facerec_examples", "obama", "obama.jpg"))
    face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
    service.create_user(collection_id="c", user_id="u")
    calls = _arguments(face_id, service.create_access_key(role="reviewer"))
    assert set(calls) == set(_public_methods()) - set(NOT_OPERATIONS)
    operation_of = {operation.method: name for name, operation in OPERATIONS.items()}
    outcomes = {}
    for method, arguments in calls.items():
        before = sum(1 for _ in service.ledger.entries())
        try:
            getattr(service, method)(**arguments)
            outcomes[method] = "ok"
        except FaceledgerError as error:
            outcomes[method] = error.code
        entries = list(service.ledger.entries())
        assert len(entries) == before + 1, f"{method} left {len(entries) - before} entries"
        assert entries[-1].operation == operation_of[method]
        assert entries[-1].outcome == ("ok" if outcomes[method] == "ok" else "error")
    assert outcomes["search_faces_by_image"] == "ok" and outcomes["index_faces"] == "InvalidImageFormatException"
    assert outcomes["list_tags_for_resource"] == "InvalidParameterException"
    before = sum(1 for _ in service.ledger.entries())
    result = service.index_image(collection_id="c", image=image_bytes("facerec_examples", "biden", "biden.jpg"))
    assert [e.operation for e in service.ledger.entries()][before:] == ["IndexFaces"]
    assert list(service.ledger.entries())[-1].result["IndexedFaceIds"] == [r.face_id for r, _ in result.indexed]


def test_an_operation_cannot_start_inside_another(service: FaceService) -> None:
    """One operation, one entry: nesting would ledger the inner effect twice."""
    with pytest.raises(RuntimeError):
        service._runner.run("ListCollections", lambda: service.list_collections())
    assert service.list_collections()["CollectionIds"] == []  # the runner is usable again


def test_search_and_erasure_are_not_public_but_as_operations(service: FaceService) -> None:
    """They ran with no authorisation, policy check or ledger entry when they were public; erasure
    is public again only as the operation EraseFaces (authorised, ledgered: its receipt)."""
    assert not hasattr(service, "search_by_embedding")
    assert OPERATIONS["EraseFaces"].method == "erase_faces"
