"""Running the HTTP API with uvicorn (graceful shutdown on SIGINT/SIGTERM is uvicorn's)."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from faceledger.api.app import ApiSettings, create_app
from faceledger.ledger.chain import Ledger
from faceledger.service import FaceService

log = logging.getLogger("faceledger.api")


def configure_logging() -> None:
    """Access log as JSON lines on stderr (no secrets, headers or image bytes are ever logged)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("faceledger.access", "faceledger.api"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def build_server(service: FaceService, host: str, port: int, settings: ApiSettings) -> uvicorn.Server:
    if not settings.auth:
        log.warning(
            "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach %s:%d can read, "
            "search and delete every face. Never expose this beyond a test machine.", host, port
        )
    config = uvicorn.Config(
        create_app(service, settings),
        host=host,
        port=port,
        access_log=False,  # faceledger.access logs each request without query strings or headers
        log_level="warning",
        timeout_graceful_shutdown=30,
    )
    return uvicorn.Server(config)


@contextmanager
def serve_in_thread(
    service: FaceService, settings: ApiSettings | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """Run the API in a background thread (for tests, benchmarks and embedding in another
    program); yields its base URL and stops it on exit. ``port=0`` picks a free port."""
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(service, settings), host=host, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="faceledger-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the API server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@contextmanager
def signing_ledger_head(ledger: Ledger, every_seconds: float = 60.0) -> Iterator[None]:
    """Sign the audit ledger's head every ``every_seconds`` while the server runs, and once more
    when it stops, so that at most a minute of entries rests on the hash chain alone."""
    stop = threading.Event()

    def sign_periodically() -> None:
        while not stop.wait(every_seconds):
            try:
                ledger.sign_head()
            except Exception:  # noqa: BLE001 - a failed signature must not stop the server
                log.exception("could not sign the ledger head")

    thread = threading.Thread(target=sign_periodically, name="faceledger-ledger-signer", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        ledger.sign_head()
