"""Running the HTTP API with uvicorn (graceful shutdown on SIGINT/SIGTERM is uvicorn's)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from faceledger.api.app import ApiSettings, create_app
from faceledger.api.connections import ConnectionGuard, guarded_protocol
from faceledger.errors import FaceledgerError
from faceledger.service import FaceService
from faceledger.service.video_operations import worker_name

log = logging.getLogger("faceledger.api")
VIDEO_POLL_SECONDS = 1.0  # how soon a node idle for video notices a new job
VIDEO_WORKER_NICENESS = 10


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
            "search and delete every face. Never expose this beyond a test machine.",
            host,
            port,
        )
    return uvicorn.Server(uvicorn_config(service, host, port, settings, graceful_shutdown_seconds=30))


def uvicorn_config(
    service: FaceService,
    host: str,
    port: int,
    settings: ApiSettings | None = None,
    *,
    graceful_shutdown_seconds: int | None = None,
) -> uvicorn.Config:
    """uvicorn serving the API under ``settings``' connection limits: uvicorn's h11 protocol with
    a connection cap and a header deadline (api/connections.py), headers of at most
    ``max_header_bytes``, idle keep-alive connections closed after 5 seconds, no WebSocket."""
    settings = settings or ApiSettings()
    guard = ConnectionGuard(
        settings.max_connections, settings.max_connections_per_client, settings.header_timeout_seconds
    )
    return uvicorn.Config(
        create_app(service, settings),
        host=host,
        port=port,
        http=guarded_protocol(guard),
        ws="none",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=5,
        access_log=False,  # faceledger.access logs each request without query strings or headers
        log_level="warning",
        timeout_graceful_shutdown=graceful_shutdown_seconds,
    )


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
    server = uvicorn.Server(uvicorn_config(service, host, port, settings))
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
def background_duties(service: FaceService, sign_every: float = 60.0, purge_every: float = 3600.0) -> Iterator[None]:
    """While the server runs: sign the audit ledger's head every ``sign_every`` seconds (so at
    most that much of the ledger rests on the hash chain alone) and purge faces past their
    retention or consent every ``purge_every`` seconds, each duty done by one node at a time where
    several share the store (a node that finds another doing it skips its turn); sign once more
    when it stops. Apply the changes other nodes commit to this node's vector indexes as the store
    announces them (PostgreSQL). Run stored-video jobs, one at a time. First of all, load every collection's vector index, so the first
    searches do not wait for it (a search that comes earlier waits for its collection's index
    only)."""
    stop = threading.Event()

    def load_indexes() -> None:
        for collection_id in service.store.list_collection_ids(None, 1_000_000):
            try:
                service.indexes.for_search(collection_id)
            except FaceledgerError as error:  # e.g. its face model is not run here: searches say so
                log.warning("collection %s: index not loaded: %s", collection_id, error.message)
            except Exception:  # noqa: BLE001 - a search rebuilds whatever failed to load here
                log.exception("loading the vector index of %s failed", collection_id)

    def run() -> None:
        next_purge = time.monotonic()
        while True:
            try:
                if time.monotonic() >= next_purge:
                    with service.store.duty("purge") as mine:
                        if mine:
                            service.purge()
                    next_purge = time.monotonic() + purge_every
                with service.store.duty("sign") as mine:
                    if mine:
                        service.ledger.sign_head()
            except Exception:  # noqa: BLE001 - a failed duty must not stop the server; it is logged
                log.exception("background duty failed")
            if stop.wait(sign_every):
                return

    def run_video_jobs() -> None:
        """Stored-video jobs, one at a time, below the CPU priority of requests (like image
        analysis); a job cut short by the server's stop is taken up again when its lease runs out."""
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), VIDEO_WORKER_NICENESS)
        worker = worker_name()
        while not stop.is_set():
            try:
                ran = service.run_video_job(worker=worker)
            except Exception:  # noqa: BLE001 - a failed turn must not stop the worker; it is logged
                log.exception("video worker failed")
                ran = False
            if not ran:
                stop.wait(VIDEO_POLL_SECONDS)

    stop_watching = service.store.watch_changes(service.indexes.refresh)
    threading.Thread(target=load_indexes, name="faceledger-index-loader", daemon=True).start()
    thread = threading.Thread(target=run, name="faceledger-duties", daemon=True)
    thread.start()
    threading.Thread(target=run_video_jobs, name="faceledger-video", daemon=True).start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        if stop_watching is not None:
            stop_watching()
        service.ledger.sign_head()
