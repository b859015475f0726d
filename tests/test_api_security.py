"""The HTTP API through the attacker's door: hand-signed raw requests, captured and replayed or
altered requests, slow and stalled clients on raw sockets, oversized and deeply nested bodies.

Every network test talks to a server on 127.0.0.1 with small timeouts (ApiSettings), so each
takes a few seconds at most."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import faceledger
from faceledger.api.app import ApiSettings
from faceledger.service import FaceService

from api_server import RunningServer, running_server, send_raw

TARGET = "RekognitionService."
# timeouts small enough for tests, large enough for a loaded 2-core machine
QUICK = ApiSettings(header_timeout_seconds=1.5, body_timeout_seconds=1.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Iterator[RunningServer]:
    service = faceledger.open(tmp_path_factory.mktemp("security"))
    with running_server(service, QUICK) as running:
        yield running
    service.close()


def _signed(
    server: RunningServer,
    credentials: tuple[str, str],
    operation: str,
    document: dict | None = None,
    *,
    headers: dict[str, str] | None = None,
    unsigned_headers: dict[str, str] | None = None,
) -> AWSRequest:
    """A request signed as an SDK signs it (every header present at signing time is signed);
    ``unsigned_headers`` are added after signing, as an attacker who captured it would."""
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=json.dumps(document or {}).encode(),
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET + operation, **(headers or {})},
    )
    SigV4Auth(Credentials(*credentials), "rekognition", "us-east-1").add_auth(request)
    for name, value in (unsigned_headers or {}).items():
        request.headers[name] = value
    return request


def _signed_with_only_host_and_date(server: RunningServer, credentials: tuple[str, str], body: bytes) -> AWSRequest:
    """What a minimal signer produces: SignedHeaders=host;x-amz-date, nothing about the operation."""
    request = AWSRequest(method="POST", url=server.url + "/", data=body, headers={})
    SigV4Auth(Credentials(*credentials), "rekognition", "us-east-1").add_auth(request)
    assert "SignedHeaders=host;x-amz-date," in request.headers["Authorization"]
    return request


def _key(service: FaceService, role: str = "admin") -> tuple[str, str]:
    key, secret = service.access.create_key(role)
    return key.access_key_id, secret


def _entries(service: FaceService) -> list:
    return list(service.ledger.entries())


# -- 2, 3: what the signature covers ---------------------------------------------------------------


def test_an_operation_outside_the_signature_is_refused(server: RunningServer) -> None:
    service = server.service
    credentials = _key(service)
    service.create_collection(collection_id="kept")
    captured = _signed_with_only_host_and_date(server, credentials, b'{"CollectionId": "kept"}')
    captured.headers["Content-Type"] = "application/x-amz-json-1.1"
    captured.headers["X-Amz-Target"] = TARGET + "DeleteCollection"  # the attacker names the operation

    status, error = send_raw(captured)

    assert (status, error["__type"]) == (400, "IncompleteSignatureException")
    assert "x-amz-target" in error["message"] and "content-type" in error["message"]
    assert "kept" in service.list_collections()["CollectionIds"]


def test_a_fully_signed_request_with_its_operation_changed_is_refused(server: RunningServer) -> None:
    service = server.service
    credentials = _key(service)
    service.create_collection(collection_id="kept-too")
    captured = _signed(server, credentials, "DescribeCollection", {"CollectionId": "kept-too"})
    captured.headers["X-Amz-Target"] = TARGET + "DeleteCollection"

    status, error = send_raw(captured)

    assert (status, error["__type"]) == (400, "InvalidSignatureException")
    assert "kept-too" in service.list_collections()["CollectionIds"]


@pytest.mark.parametrize(
    "name", ["X-Faceledger-Purpose", "X-Faceledger-Case", "X-Amz-Content-Sha256", "X-Amz-Security-Token"]
)
def test_every_x_amz_and_x_faceledger_header_must_be_signed(server: RunningServer, name: str) -> None:
    credentials = _key(server.service)
    value = hashlib.sha256(b"{}").hexdigest() if name == "X-Amz-Content-Sha256" else "added later"
    request = _signed(server, credentials, "ListCollections", unsigned_headers={name: value})

    status, error = send_raw(request)

    assert (status, error["__type"]) == (400, "IncompleteSignatureException")
    assert name.lower() in error["message"]


def test_boto3_signs_what_the_server_requires(server: RunningServer) -> None:
    client = server.client_with_role("admin")
    seen: dict[str, str] = {}

    def declare(request, **kwargs) -> None:
        request.headers["X-Faceledger-Purpose"] = "audit of the archive"
        request.headers["X-Faceledger-Case"] = "CASE-7"

    def capture(request, **kwargs) -> None:
        seen["authorization"] = request.headers["Authorization"].decode()

    client.meta.events.register("before-sign.rekognition.*", declare)
    client.meta.events.register("before-send.rekognition.*", capture)
    client.list_collections()
    signed = seen["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"content-type", "host", "x-amz-date", "x-amz-target", "x-faceledger-purpose", "x-faceledger-case"} <= set(
        signed
    )
    entry = _entries(server.service)[-1]
    assert (entry.operation, entry.purpose, entry.case_ref) == ("ListCollections", "audit of the archive", "CASE-7")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Faceledger-Purpose", "p" * 8000),
        ("X-Faceledger-Purpose", "p" * 257),
        ("X-Faceledger-Case", "c" * 129),
        ("X-Faceledger-Purpose", "tab\tinside"),
        ("X-Faceledger-Case", "next\x85line"),
    ],
    ids=["8000-chars", "257-chars", "case-129-chars", "tab", "next-line"],
)
def test_purpose_and_case_are_capped_and_printable(server: RunningServer, header: str, value: str) -> None:
    service = server.service
    credentials = _key(service)
    before = len(_entries(service))

    status, error = send_raw(_signed(server, credentials, "ListCollections", headers={header: value}))

    assert (status, error["__type"]) == (400, "InvalidParameterException")
    assert header in error["message"]
    entries = _entries(service)[before:]
    assert [(e.operation, e.error, e.purpose, e.case_ref) for e in entries] == [
        ("ListCollections", "InvalidParameterException", None, None)
    ]


def test_purpose_and_case_at_their_limits_are_kept(server: RunningServer) -> None:
    credentials = _key(server.service)
    purpose, case = "p" * 256, "Dossier n° 5 " + "c" * 115
    status, _ = send_raw(
        _signed(
            server,
            credentials,
            "ListCollections",
            headers={"X-Faceledger-Purpose": purpose, "X-Faceledger-Case": case},
        )
    )
    assert status == 200
    entry = _entries(server.service)[-1]
    assert (len(entry.purpose), len(entry.case_ref)) == (256, 128)


# -- replays --------------------------------------------------------------------------------------


def test_a_replayed_request_that_changes_data_is_refused(server: RunningServer) -> None:
    service = server.service
    credentials = _key(service)
    service.create_collection(collection_id="replayed")
    captured = _signed(server, credentials, "DeleteCollection", {"CollectionId": "replayed"})
    assert send_raw(captured)[0] == 200
    service.create_collection(collection_id="replayed")  # the owner creates it again
    before = len(_entries(service))

    status, error = send_raw(captured)

    assert (status, error["__type"]) == (503, "ReplayedRequestException")
    entries = _entries(service)[before:]
    assert [(e.operation, e.outcome, e.error, e.access_key_id) for e in entries] == [
        ("DeleteCollection", "error", "ReplayedRequestException", credentials[0])
    ]
    assert "replayed" in service.list_collections()["CollectionIds"]


def test_a_request_replayed_to_another_node_is_refused(tmp_path: Path) -> None:
    """Two nodes on one store behind one address (a load balancer): what one node ran, the other
    refuses; each remembering only its own would let a captured request run again elsewhere."""
    import http.client
    from urllib.parse import urlsplit

    data = tmp_path / "data"
    with faceledger.open(data) as one, faceledger.open(data) as other:
        with running_server(one, QUICK) as node_a, running_server(other, QUICK) as node_b:
            credentials = _key(one)
            one.create_collection(collection_id="replayed")
            captured = _signed(node_a, credentials, "DeleteCollection", {"CollectionId": "replayed"})
            assert send_raw(captured)[0] == 200
            one.create_collection(collection_id="replayed")  # the owner creates it again
            # the same bytes, Host header included, reach the other node
            connection = http.client.HTTPConnection(urlsplit(node_b.url).netloc, timeout=30)
            headers = {**dict(captured.headers.items()), "Host": urlsplit(node_a.url).netloc}
            connection.request("POST", "/", body=captured.body, headers=headers)
            reply = connection.getresponse()
            status, error = reply.status, json.loads(reply.read())
            connection.close()
            assert (status, error["__type"]) == (503, "ReplayedRequestException")
            assert "replayed" in one.list_collections()["CollectionIds"]


def test_reads_may_be_replayed(server: RunningServer) -> None:
    credentials = _key(server.service)
    captured = _signed(server, credentials, "ListCollections")
    assert send_raw(captured)[0] == 200
    assert send_raw(captured)[0] == 200


def test_an_sdk_repeating_an_identical_call_gets_through_on_its_retry(server: RunningServer) -> None:
    # Two identical calls in the same second have the same signature; the refusal is retryable and
    # botocore signs each retry anew, so the second call runs a moment later, as on AWS.
    client = server.client_with_role("admin", retries=6)
    arn = client.create_collection(CollectionId="tagged-twice")["CollectionArn"]
    for _ in range(2):
        client.tag_resource(ResourceArn=arn, Tags={"team": "archive"})
    assert client.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"team": "archive"}


# -- failed authentication ------------------------------------------------------------------------


def test_failed_authentications_are_ledgered_once_per_key_per_interval(tmp_path: Path) -> None:
    with faceledger.open(tmp_path) as service:
        with running_server(service, ApiSettings(refusal_ledger_interval_seconds=60)) as server:
            key_id, secret = _key(service, "indexer")
            before = len(_entries(service))
            for _ in range(3):
                status, error = send_raw(
                    _signed(server, (key_id, secret + "x"), "DeleteCollection", {"CollectionId": "c"})
                )
                assert error["__type"] == "InvalidSignatureException"
            send_raw(_signed(server, ("FLNOSUCHKEY000000000", secret), "DeleteCollection", {"CollectionId": "c"}))
            # unknown keys share one allowance: made-up key ids cannot flood the ledger either
            send_raw(_signed(server, ("FLANOTHERONE<x>00000", secret), "DeleteCollection", {"CollectionId": "c"}))
            send_raw(_signed(server, (key_id, secret + "x"), "DetectLabels"))  # not an operation: not ledgered

            entries = _entries(service)[before:]
    assert [(e.operation, e.outcome, e.error, e.access_key_id, e.role) for e in entries] == [
        ("DeleteCollection", "error", "InvalidSignatureException", key_id, "indexer"),
        ("DeleteCollection", "error", "UnrecognizedClientException", "unknown:FLNOSUCHKEY000000000", "unauthenticated"),
    ]
    assert secret not in json.dumps([e.content() for e in entries])


# -- 9: bodies that are not what they claim -------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000], ids=["lists", "objects"]
)
def test_deeply_nested_json_is_a_serialization_exception_and_ledgered(server: RunningServer, body: bytes) -> None:
    service = server.service
    credentials = _key(service)
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET + "ListCollections"},
    )
    SigV4Auth(Credentials(*credentials), "rekognition", "us-east-1").add_auth(request)
    before = len(_entries(service))

    status, error = send_raw(request)

    assert (status, error["__type"]) == (400, "SerializationException")
    entries = _entries(service)[before:]
    assert [(e.operation, e.error) for e in entries] == [("ListCollections", "SerializationException")]


@pytest.mark.parametrize("text", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(
    ("operation", "document"),
    [
        ("FaceledgerService.GetReviewCase", {"CaseId": "{}"}),
        ("FaceledgerService.ListReviewCases", {"OpenedBy": "FL{}"}),
        ("FaceledgerService.ListLedgerEntries", {"Purpose": "p{}"}),
        ("RekognitionService.ListCollections", {"NextToken": "t{}"}),
    ],
    ids=["case-id", "opened-by", "ledger-filter", "token"],
)
def test_a_string_no_text_store_keeps_is_a_clear_refusal(
    server: RunningServer, operation: str, document: dict, text: str
) -> None:
    """JSON can carry a NUL (PostgreSQL's text refuses it) and a lone surrogate (no UTF-8 encodes
    it) in any string; either reached the database as a 500. Refused at the door, ledgered."""
    service = server.service
    filled = {name: value.format(text) for name, value in document.items()}
    body = json.dumps(filled).encode()
    if operation.endswith("ListCollections"):  # JSON's decoder reads UTF-16 too: a lone surrogate needs no escape
        body = json.dumps(filled, ensure_ascii=False).encode("utf-16-le", "surrogatepass")
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": operation},
    )
    SigV4Auth(Credentials(*_key(service)), "rekognition", "us-east-1").add_auth(request)
    before = len(_entries(service))

    status, error = send_raw(request)

    assert (status, error["__type"]) == (400, "InvalidParameterException"), error
    assert [e.error for e in _entries(service)[before:]] == ["InvalidParameterException"]


# -- 4: slow and stalled clients ------------------------------------------------------------------

HEADERS = (
    "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.1\r\n"
    "X-Amz-Target: RekognitionService.ListCollections\r\nContent-Length: {length}\r\n\r\n"
)


def _connect(server: RunningServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=5)
    return connection


def _read_until_closed(connection: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and after how many seconds."""
    started = time.monotonic()
    connection.settimeout(limit)
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except TimeoutError:
        return received, float("inf")
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


@contextmanager
def _slow_clients(server: RunningServer, bodies: int, headers: int, every: float = 0.3) -> Iterator[list[str]]:
    """``bodies`` connections sending a 100 kB body one byte every ``every`` seconds and
    ``headers`` connections sending their headers the same way; yields what became of them."""
    stop = threading.Event()
    fates: list[str] = []

    def drip(payload: bytes) -> None:
        try:
            with _connect(server) as connection:
                for n in range(len(payload)):
                    if stop.is_set():
                        fates.append("still open")
                        return
                    connection.sendall(payload[n : n + 1])
                    time.sleep(every)
                fates.append("finished")
        except OSError:
            fates.append("closed by the server")

    def slow_body() -> None:
        try:
            with _connect(server) as connection:
                connection.sendall(HEADERS.format(length=100_000).encode())
                while not stop.wait(every):
                    connection.sendall(b" ")
                fates.append("still open")
        except OSError:
            fates.append("closed by the server")

    threads = [threading.Thread(target=slow_body) for _ in range(bodies)]
    threads += [
        threading.Thread(target=drip, args=(HEADERS.format(length=2).encode() + b"{}",)) for _ in range(headers)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # every slow client is connected and dripping
        yield fates
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)


def test_slow_clients_do_not_starve_a_legitimate_call(tmp_path: Path) -> None:
    settings = ApiSettings(worker_threads=1, max_waiting=2, header_timeout_seconds=2, body_timeout_seconds=2)
    with faceledger.open(tmp_path) as service, running_server(service, settings) as server:
        client = server.client_with_role("admin")
        with _slow_clients(server, bodies=24, headers=8):
            started = time.monotonic()
            listed = client.list_collections()
            took = time.monotonic() - started
            assert listed["CollectionIds"] == [] and took < 1.5, took


def test_slow_clients_are_cut_off_at_their_timeouts(tmp_path: Path) -> None:
    settings = ApiSettings(header_timeout_seconds=1, body_timeout_seconds=1)
    with faceledger.open(tmp_path) as service, running_server(service, settings) as server:
        started = time.monotonic()
        with _slow_clients(server, bodies=4, headers=4, every=0.2) as fates:
            time.sleep(2.5)
            assert fates.count("closed by the server") == 8, fates
        assert time.monotonic() - started < 5


def test_a_stalled_body_is_answered_within_the_timeout(server: RunningServer) -> None:
    with _connect(server) as connection:
        connection.sendall(HEADERS.format(length=1000).encode() + b'{"MaxResults":')
        answer, after = _read_until_closed(connection, limit=5)
    assert after < QUICK.body_timeout_seconds + 1.5, after
    assert answer.startswith(b"HTTP/1.1 408 ") and b"RequestTimeoutException" in answer


@pytest.mark.parametrize("sent", [b"", b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"], ids=["idle", "half-headers"])
def test_stalled_headers_and_idle_connections_are_closed(server: RunningServer, sent: bytes) -> None:
    with _connect(server) as connection:
        connection.sendall(sent)
        answer, after = _read_until_closed(connection, limit=5)
    assert after < QUICK.header_timeout_seconds + 1.5, after
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")


def test_connections_beyond_the_cap_are_refused(tmp_path: Path) -> None:
    settings = ApiSettings(max_connections=4, max_connections_per_client=4, header_timeout_seconds=5)
    with faceledger.open(tmp_path) as service, running_server(service, settings) as server:
        client = server.client_with_role("admin", retries=4)
        held = [_connect(server) for _ in range(4)]
        try:
            with _connect(server) as extra:
                answer, after = _read_until_closed(extra, limit=3)
            assert answer.startswith(b"HTTP/1.1 503 ") and b"ThrottlingException" in answer
            assert after < 1
        finally:
            for connection in held:
                connection.close()
        assert client.list_collections()["CollectionIds"] == []


def test_bodies_beyond_the_unauthenticated_budget_are_refused_before_they_are_read(tmp_path: Path) -> None:
    settings = ApiSettings(unauthenticated_body_bytes=1_000_000, body_timeout_seconds=3)
    with faceledger.open(tmp_path) as service, running_server(service, settings) as server:
        client = server.client_with_role("admin")
        with _connect(server) as holding:
            holding.sendall(HEADERS.format(length=900_000).encode() + b" " * 800_000)  # then stalls
            time.sleep(0.3)
            with _connect(server) as second:
                second.sendall(HEADERS.format(length=400_000).encode())
                answer, after = _read_until_closed(second, limit=3)
            assert answer.startswith(b"HTTP/1.1 400 ") and b"ThrottlingException" in answer
            assert after < 1
            assert client.list_collections()["CollectionIds"] == []  # small bodies still pass


@contextmanager
def _logged() -> Iterator[list[logging.LogRecord]]:
    """Records of the access and error logs, whatever their propagation is set to."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(name) for name in ("faceledger.access", "faceledger.api")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def test_a_client_disconnect_is_logged_as_a_disconnect(server: RunningServer) -> None:
    with _logged() as records:
        with _connect(server) as connection:
            connection.sendall(HEADERS.format(length=1000).encode() + b'{"MaxResults":')
            time.sleep(0.2)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not records:
            time.sleep(0.05)
        time.sleep(0.1)
    access = [json.loads(r.getMessage()) for r in records if r.name == "faceledger.access"]
    assert [(a.get("status"), a.get("error")) for a in access] == [(499, "ClientDisconnected")]
    assert not [r for r in records if r.levelno >= logging.ERROR or r.exc_info]


# -- weak point: one key cannot take the whole server ----------------------------------------------


def test_each_access_key_has_its_own_request_rate(tmp_path: Path) -> None:
    settings = ApiSettings(requests_per_second_per_key=2.0, burst_per_key=3)
    with faceledger.open(tmp_path) as service, running_server(service, settings) as server:
        greedy, other = _key(service, "auditor"), _key(service, "auditor")
        answers = [send_raw(_signed(server, greedy, "ListCollections"))[0] for _ in range(5)]
        assert answers[:3] == [200, 200, 200] and 400 in answers[3:]  # the burst, then ThrottlingException
        status, error = send_raw(_signed(server, greedy, "ListCollections"))
        assert status == 400 and error["__type"] == "ThrottlingException"
        assert send_raw(_signed(server, other, "ListCollections"))[0] == 200  # another key is not slowed
        time.sleep(0.6)  # one request's worth of allowance back at 2 per second
        assert send_raw(_signed(server, greedy, "ListCollections"))[0] == 200
