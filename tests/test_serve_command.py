"""``faceledger keys`` and ``faceledger serve`` as a user runs them: separate processes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from api_server import free_loopback_port
from conftest import stored_bytes


def _faceledger() -> str:
    return shutil.which("faceledger") or pytest.fail("the faceledger console script is not on PATH")


def test_keys_then_serve_then_graceful_stop(tmp_path: Path) -> None:
    data = str(tmp_path)
    created = subprocess.run(
        [_faceledger(), "--data-dir", data, "keys", "create", "--role", "admin", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    key = json.loads(created.stdout)
    listed = subprocess.run(
        [_faceledger(), "--data-dir", data, "keys", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert [k["AccessKeyId"] for k in json.loads(listed.stdout)["AccessKeys"]] == [key["AccessKeyId"]]
    assert key["SecretAccessKey"] not in listed.stdout
    assert (tmp_path / "secrets.key").stat().st_mode & 0o077 == 0
    assert key["SecretAccessKey"].encode() not in stored_bytes(tmp_path)

    port = free_loopback_port()
    server = subprocess.Popen(
        [_faceledger(), "--data-dir", data, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = boto3.client(
            "rekognition",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="eu-west-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )
        deadline = time.monotonic() + 60
        while True:  # a read until the server answers: retrying a write could run it twice
            try:
                assert client.list_collections()["CollectionIds"] == []
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        client.create_collection(CollectionId="served")
        assert client.list_collections()["CollectionIds"] == ["served"]
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    # uvicorn finishes in-flight requests, then re-raises SIGTERM so the exit status tells why
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output
    access_lines = [
        json.loads(line.split(" INFO ", 1)[1]) for line in output.splitlines() if "faceledger.access" in line
    ]
    assert {line["operation"] for line in access_lines} >= {"CreateCollection", "ListCollections"}
    assert key["SecretAccessKey"] not in output
    assert "Authorization" not in output and "Signature=" not in output


def test_disabled_and_deleted_keys(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [_faceledger(), "--data-dir", str(tmp_path), *args], capture_output=True, text=True, timeout=120
        )

    key = json.loads(run("keys", "create", "--role", "searcher", "--collections", "a,b", "--json").stdout)
    assert key["Collections"] == ["a", "b"]
    assert run("keys", "disable", key["AccessKeyId"]).returncode == 0
    assert json.loads(run("keys", "list", "--json").stdout)["AccessKeys"][0]["Enabled"] is False
    assert run("keys", "delete", key["AccessKeyId"]).returncode == 0
    missing = run("keys", "delete", key["AccessKeyId"])
    assert missing.returncode == 4 and missing.stderr.startswith("error: ResourceNotFoundException")
    bad_role = run("keys", "create", "--role", "superuser")
    assert bad_role.returncode == 2 and "Role must be one of" in bad_role.stderr


def test_insecure_mode_warns(tmp_path: Path) -> None:
    port = free_loopback_port()
    server = subprocess.Popen(
        [_faceledger(), "--data-dir", str(tmp_path), "serve", "--port", str(port), "--insecure-no-auth"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(3)
    server.send_signal(signal.SIGTERM)
    output, _ = server.communicate(timeout=60)
    assert "AUTHENTICATION IS OFF" in output


@pytest.mark.parametrize("option", ["--worker-threads", "--quick-threads"])
def test_serve_refuses_no_worker_threads(tmp_path: Path, option: str) -> None:
    from typer.testing import CliRunner

    from faceledger.cli.main import app

    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "serve", option, "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert option in result.output
