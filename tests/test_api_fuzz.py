"""Property test: whatever a signed client sends, the answer is a well-formed AWS response, never
a 500 or a traceback. Bodies are malformed JSON, wrong types, oversize values, garbage images."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import faceledger
from faceledger.api.wire import service_model
from faceledger.service.operations import Door, offered_at

from api_server import RunningServer, running_server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, store_backend: str):
    service = faceledger.open(tmp_path_factory.mktemp("fuzz"))
    service.create_collection(collection_id="fuzz")
    key, secret = service.access.create_key("admin")
    with running_server(service) as running:
        yield running, Credentials(key.access_key_id, secret)
    service.close()


def _tiny_png(size: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (size % 256, 80, 160)).save(out, format="PNG")
    return out.getvalue()


json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=300)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
garbage_images = st.one_of(
    st.binary(min_size=0, max_size=2000).map(lambda b: {"Bytes": base64.b64encode(b).decode()}),
    st.text(max_size=50).map(lambda t: {"Bytes": t}),  # not base64
    st.integers(1, 40).map(lambda n: {"Bytes": base64.b64encode(_tiny_png(n)).decode()}),
    st.just({"S3Object": {"Bucket": "photos", "Name": "x.jpg"}}),
    json_values,
)


@st.composite
def operation_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    operation = draw(st.sampled_from([*sorted(offered_at(Door.REKOGNITION)), "DetectLabels", "NoSuchThing"]))
    kind = draw(st.sampled_from(["raw", "json", "members"]))
    if kind == "raw":
        return operation, draw(st.binary(max_size=300))
    if kind == "json":
        return operation, json.dumps(draw(json_values)).encode()
    members: dict[str, object] = {}
    model = service_model()
    if operation in model.operation_names and model.operation_model(operation).input_shape is not None:
        for name, shape in model.operation_model(operation).input_shape.members.items():
            if not draw(st.booleans()):
                continue
            if shape.name == "Image":
                members[name] = draw(garbage_images)
            elif name == "CollectionId":
                members[name] = draw(st.sampled_from(["fuzz", "missing", "", "x" * 300, "bad id"]) | json_scalars)
            else:
                members[name] = draw(json_values)
    return operation, json.dumps(members).encode()


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(case=operation_bodies())
def test_any_signed_request_gets_a_well_formed_aws_answer(fuzz_server, case: tuple[str, bytes]) -> None:
    server, credentials = fuzz_server
    operation, body = case
    status, content_type, payload = _post(server, credentials, operation, body)
    assert status in (200, 400, 403), (status, payload[:300])
    assert content_type == "application/x-amz-json-1.1"
    document = json.loads(payload)
    assert isinstance(document, dict)
    if status != 200:
        assert set(document) == {"__type", "message"}
        assert isinstance(document["__type"], str) and document["__type"].endswith(("Exception", "Error"))
        assert document["__type"] != "InternalServerError", document
        assert "Traceback" not in document["message"]


def _post(server: RunningServer, credentials: Credentials, operation: str, body: bytes) -> tuple[int, str, bytes]:
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"RekognitionService.{operation}",
        },
    )
    SigV4Auth(credentials, "rekognition", "us-east-1").add_auth(request)
    raw = urllib.request.Request(request.url, data=body, method="POST", headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(raw) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()
