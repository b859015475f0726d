"""Server mode as it is deployed: two real ``faceledger serve`` processes (nodes, each with its
own data directory holding copies of the first node's keys) on one real PostgreSQL, used by boto3.

- a face acknowledged by one node is searchable on the other within a second, and a deleted one
  is gone as fast; a load run over both nodes finds no stale result;
- SIGKILL of a node under load, and a restart of PostgreSQL under load, lose no acknowledged
  write, answer no 500, and leave a ledger that verifies; the nodes recover by themselves.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

import faceledger

from api_server import free_loopback_port
from conftest import image_bytes
from postgres import PostgreSQLServer

pytestmark = pytest.mark.backends("postgresql")

# what a node's data directory must share with the others: the keys (the store is the database)
SHARED_KEY_FILES = ("template.key", "ledger.key", "secrets.key")
REFERENCE = image_bytes("facerec_examples", "obama", "obama.jpg")
NEW_FACE = image_bytes("facerec_examples", "obama", "obama2.jpg")


def _faceledger() -> str:
    return shutil.which("faceledger") or pytest.fail("the faceledger console script is not on PATH")


@dataclass
class Node:
    data: Path
    database_url: str
    key: tuple[str, str]
    port: int = field(default_factory=free_loopback_port)
    process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [_faceledger(), "--data-dir", str(self.data), "--database", self.database_url, "serve"]
            + ["--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        client = self.client()
        deadline = time.monotonic() + 90
        while True:  # a read until the node answers
            try:
                client.list_collections()
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.2)

    def client(self):
        return boto3.client(
            "rekognition",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            region_name="eu-west-1",
            aws_access_key_id=self.key[0],
            aws_secret_access_key=self.key[1],
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=120),
        )

    def stop(self, how: signal.Signals = signal.SIGTERM) -> str:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(how)
        output, _ = self.process.communicate(timeout=60)
        return output


def _cluster(tmp_path: Path, database_url: str, count: int = 2) -> list[Node]:
    """``count`` nodes on one database; the first made the store and an admin key, the others'
    data directories are the first one's key files and nothing else."""
    first = tmp_path / "node-0"
    with faceledger.open(first, database_url=database_url) as service:
        key, secret = service.access.create_key("admin", None)
        service.create_collection(collection_id="c")
    nodes = [Node(first, database_url, (key.access_key_id, secret))]
    for n in range(1, count):
        data = tmp_path / f"node-{n}"
        data.mkdir(mode=0o700)
        for name in SHARED_KEY_FILES:
            shutil.copy2(first / name, data / name)
        nodes.append(Node(data, database_url, nodes[0].key))
    for node in nodes:
        node.start()
    return nodes


@pytest.fixture
def cluster(tmp_path: Path, postgresql_server: PostgreSQLServer) -> Iterator[list[Node]]:
    nodes = _cluster(tmp_path, postgresql_server.new_database())
    try:
        yield nodes
    finally:
        for node in nodes:
            if node.process is not None:
                node.stop()


def _matches(client, face_id: str) -> set[str]:
    """Every face id a search by ``face_id`` finds, whatever its similarity."""
    found = client.search_faces(CollectionId="c", FaceId=face_id, FaceMatchThreshold=0, MaxFaces=4096)
    return {match["Face"]["FaceId"] for match in found["FaceMatches"]}


def _index(client, name: str) -> str:
    return client.index_faces(CollectionId="c", Image={"Bytes": NEW_FACE}, ExternalImageId=name)["FaceRecords"][0][
        "Face"
    ]["FaceId"]


def _verify_ledger(node: Node) -> None:
    verified = subprocess.run(
        [_faceledger(), "--data-dir", str(node.data), "audit", "verify"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_face_acknowledged_on_one_node_is_searchable_on_the_other_within_a_second(cluster: list[Node]) -> None:
    one, other = (node.client() for node in cluster)
    reference = one.index_faces(CollectionId="c", Image={"Bytes": REFERENCE}, ExternalImageId="reference")
    reference_id = reference["FaceRecords"][0]["Face"]["FaceId"]
    assert _matches(other, reference_id) == set()
    added = _index(one, "added")
    acknowledged = time.monotonic()
    while added not in _matches(other, reference_id):
        assert time.monotonic() - acknowledged < 1.0, "not searchable on the other node within a second"
        time.sleep(0.01)
    by_image = other.search_faces_by_image(CollectionId="c", Image={"Bytes": NEW_FACE}, FaceMatchThreshold=99)
    assert added in {match["Face"]["FaceId"] for match in by_image["FaceMatches"]}
    other.delete_faces(CollectionId="c", FaceIds=[added])
    deleted = time.monotonic()
    while added in _matches(one, reference_id):
        assert time.monotonic() - deleted < 1.0, "still found on the other node a second after its deletion"
        time.sleep(0.01)


@dataclass
class LoadRun:
    """What clients saw: faces acknowledged (and not deleted), stale searches, answers by status."""

    acknowledged: set[str] = field(default_factory=set)
    stale: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    unreachable: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, action: Callable[..., object], *args: object, **kwargs: object) -> object | None:
        """``action(*args, **kwargs)``, or None when it failed (counted by status)."""
        try:
            answer = action(*args, **kwargs)
        except ClientError as error:
            status = error.response["ResponseMetadata"].get("HTTPStatusCode", 0)
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            return None
        except BotoCoreError:  # connection refused or reset: the node is gone
            with self.lock:
                self.unreachable += 1
            return None
        with self.lock:
            self.statuses[200] = self.statuses.get(200, 0) + 1
        return answer

    def server_errors(self) -> dict[int, int]:
        """Answers that are neither success nor an error SDKs retry (503 ServiceUnavailable or
        Throttling, 408)."""
        return {status: n for status, n in self.statuses.items() if status >= 500 and status != 503}


def _writer(run: LoadRun, clients: list, reference_id: str, name: str, until: Callable[[], bool]) -> None:
    """Index on one node, search on the next, delete every third face; until ``until()``."""
    i = 0
    while not until():
        writer, reader = clients[i % len(clients)], clients[(i + 1) % len(clients)]
        answer = run.call(_index, writer, f"{name}-{i}")
        if answer is not None:
            face_id = str(answer)
            with run.lock:
                run.acknowledged.add(face_id)
            found = run.call(_matches, reader, reference_id)
            if found is not None and face_id not in found:
                run.stale.append(f"{face_id} missing")
            if i % 3 == 0 and run.call(writer.delete_faces, CollectionId="c", FaceIds=[face_id]) is not None:
                with run.lock:
                    run.acknowledged.discard(face_id)
                found = run.call(_matches, reader, reference_id)
                if found is not None and face_id in found:
                    run.stale.append(f"{face_id} deleted but found")
        i += 1


def _all_faces(client) -> set[str]:
    faces, token = set(), None
    while True:
        page = client.list_faces(CollectionId="c", MaxResults=4096, **({"NextToken": token} if token else {}))
        faces |= {face["FaceId"] for face in page["Faces"]}
        token = page.get("NextToken")
        if not token:
            return faces


def _load_run(
    clients: list, reference_id: str, seconds: float, failure: Callable[[], object] | None = None, after: float = 0
) -> LoadRun:
    """Two writers over ``clients`` for ``seconds``; ``failure`` happens ``after`` seconds in."""
    run, end = LoadRun(), time.monotonic() + seconds
    writers = [
        threading.Thread(target=_writer, args=(run, clients, reference_id, f"w{n}", lambda: time.monotonic() > end))
        for n in range(2)
    ]
    for thread in writers:
        thread.start()
    if failure is not None:
        time.sleep(after)
        failure()
    for thread in writers:
        thread.join()
    return run


def test_a_load_run_over_two_nodes_finds_no_stale_result(cluster: list[Node]) -> None:
    clients = [node.client() for node in cluster]
    run = _load_run(clients, _index(clients[0], "reference"), 20)
    assert run.statuses.get(200, 0) > 40 and run.unreachable == 0
    assert run.stale == [] and run.server_errors() == {}
    assert run.acknowledged <= _all_faces(clients[1])
    _verify_ledger(cluster[0])


def test_sigkill_of_a_node_under_load_loses_no_acknowledged_write(cluster: list[Node]) -> None:
    survivor, doomed = cluster
    clients = [survivor.client(), doomed.client()]
    reference_id = _index(clients[0], "reference")
    run = _load_run(clients, reference_id, 12, lambda: doomed.stop(signal.SIGKILL), after=5)
    assert run.unreachable > 0  # the load went on while the node was gone
    assert run.server_errors() == {}
    survivor_client = survivor.client()
    assert run.acknowledged <= _all_faces(survivor_client)
    assert run.acknowledged <= _matches(survivor_client, reference_id) | {reference_id}
    _verify_ledger(survivor)
    doomed.start()  # the node comes back with its data directory as it was left
    assert run.acknowledged <= _matches(doomed.client(), reference_id) | {reference_id}


def test_postgresql_restarted_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    server = PostgreSQLServer(tmp_path / "postgresql")  # its own, since it is restarted
    nodes = _cluster(tmp_path, server.new_database())
    try:
        clients = [node.client() for node in nodes]
        reference_id = _index(clients[0], "reference")
        run = _load_run(clients, reference_id, 15, server.restart, after=4)
        assert run.server_errors() == {} and run.unreachable == 0
        assert run.statuses.get(503, 0) > 0  # the restart was seen, and answered as SDKs retry it
        # both nodes recovered by themselves: every acknowledged face is found on each
        for client in clients:
            assert run.acknowledged <= _all_faces(client)
            assert run.acknowledged <= _matches(client, reference_id) | {reference_id}
        assert run.stale == []
        _verify_ledger(nodes[0])
    finally:
        for node in nodes:
            node.stop()
        server.close()
