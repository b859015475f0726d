"""Settings that say where faceledger keeps its data and which limits it enforces."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DATA_DIR_ENV = "FACELEDGER_DATA_DIR"
# the PostgreSQL database a new data directory keeps its store in (docs/scaling.md)
DATABASE_URL_ENV = "FACELEDGER_DATABASE_URL"
SQLITE_FILE = "faceledger.sqlite3"  # a data directory's embedded store


def default_data_dir() -> Path:
    """``$FACELEDGER_DATA_DIR``, else ``$XDG_DATA_HOME/faceledger``, else ``~/.local/share/faceledger``."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "faceledger"


def cache_root() -> Path:
    """Rebuildable files (converted models, evaluation embeddings): ``$XDG_CACHE_HOME/faceledger``,
    else ``~/.cache/faceledger``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "faceledger"


@dataclass(frozen=True)
class ImageLimits:
    """Limits checked before an image is decoded, so a decompression bomb is never expanded.

    ``max_bytes``: size of the encoded file in bytes (default 15 MB, Rekognition's limit for
    images read from S3). ``max_pixels``: width x height as declared in the file header
    (default 40 megapixels).
    """

    max_bytes: int = 15 * 1024 * 1024
    max_pixels: int = 40_000_000


@dataclass(frozen=True)
class VideoLimits:
    """Stored videos (StartFaceDetection, StartFaceSearch; vision/video.py).

    ``max_bytes``: the largest video file (checked before a byte is read; default 2 GiB);
    ``max_duration_seconds`` (default 2 hours) and ``max_frame_pixels`` (default 4096x2160) are
    checked when the video is opened. ``sample_fps``: how many frames a second of video are
    analysed (default 5: a face on screen for a fifth of a second is seen; benchmarks/video.py
    measures what it costs against every frame)."""

    max_bytes: int = 2 * 1024**3
    max_duration_seconds: float = 2 * 3600.0
    max_frame_pixels: int = 4096 * 2160
    sample_fps: float = 5.0


S3_ENDPOINT_ENV = "FACELEDGER_S3_ENDPOINT_URL"
S3_REGION_ENV = "FACELEDGER_S3_REGION"
S3_BUCKETS_ENV = "FACELEDGER_S3_BUCKETS"
S3_ACCESS_KEY_ENV = "FACELEDGER_S3_ACCESS_KEY_ID"
S3_SECRET_KEY_ENV = "FACELEDGER_S3_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class ObjectStorage:
    """The S3-compatible store that images and videos named by ``S3Object`` are read from
    (service/objects.py), and nothing else: faceledger fetches no URL and reads no path it is
    sent.

    ``buckets``: the only buckets it may read (none by default: every S3Object is refused until
    the operator names some). ``endpoint_url``: an S3-compatible server (MinIO, Ceph, ...;
    None: AWS S3). Credentials: ``access_key_id`` and ``secret_access_key`` if set, else the usual
    AWS configuration (environment, ``~/.aws``, instance role). From the environment:
    FACELEDGER_S3_ENDPOINT_URL, FACELEDGER_S3_REGION, FACELEDGER_S3_BUCKETS (comma-separated),
    FACELEDGER_S3_ACCESS_KEY_ID and FACELEDGER_S3_SECRET_ACCESS_KEY."""

    buckets: tuple[str, ...] = ()
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls) -> ObjectStorage:
        buckets = tuple(b.strip() for b in os.environ.get(S3_BUCKETS_ENV, "").split(",") if b.strip())
        return cls(
            buckets,
            os.environ.get(S3_ENDPOINT_ENV) or None,
            os.environ.get(S3_REGION_ENV) or None,
            os.environ.get(S3_ACCESS_KEY_ENV) or None,
            os.environ.get(S3_SECRET_KEY_ENV) or None,
        )


@dataclass(frozen=True)
class Settings:
    """Everything a :class:`~faceledger.service.FaceService` needs to open.

    ``region`` and ``account_id`` only shape the ARNs reported for collections, so that clients
    written for Rekognition find the fields they expect.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    object_storage: ObjectStorage = field(default_factory=ObjectStorage.from_environment)
    video_limits: VideoLimits = field(default_factory=VideoLimits)
    region: str = "local"
    account_id: str = "000000000000"
    # Off only to measure what template encryption and the audit ledger cost (benchmarks); see
    # keys/templates.py and ledger/chain.py. Never turn them off where real faces are kept.
    encrypt_templates: bool = True
    audit_ledger: bool = True
    # A postgresql:// URL: the database the data directory's store is in (it must be the one
    # the directory already has). None: the directory's own store (data_directory.py).
    database_url: str | None = None

    @property
    def database_path(self) -> Path:
        """The SQLite file of a data directory that keeps its store embedded."""
        return self.data_dir / SQLITE_FILE
