"""Running the HTTP API with uvicorn (graceful shutdown on SIGINT/SIGTERM is uvicorn's)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from faceledger.api.app import ApiSettings, create_app
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
