"""Plain records of what the store holds; every store backend reads and writes these and nothing else."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CollectionRecord:
    collection_id: str
    created_at: float  # seconds since the Unix epoch, UTC
    face_model_version: str
    face_count: int = 0
    user_count: int = 0


@dataclass(frozen=True)
class ImageRecord:
    """One image indexed into a collection (also when no face was indexed from it), so that a
    re-run of a folder index skips it by SHA-256. Pixels are kept only when asked (``content``)."""

    image_id: str
    collection_id: str
    image_sha256: str
    external_image_id: str | None
    width: int
    height: int
    face_count: int
    indexed_at: float
    source_path: str | None = None
    content: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FaceRecord:
    """One indexed face. ``bounding_box`` and landmark coordinates are ratios of the image size,
    as Rekognition reports them; ``quality`` holds Sharpness/Brightness (0-100), FaceSize
    (pixels) and Pose (degrees). The store never sees the embedding in the clear."""

    face_id: str
    collection_id: str
    image_id: str
    external_image_id: str | None
    image_sha256: str
    bounding_box: dict[str, float]
    confidence: float
    landmarks: dict[str, tuple[float, float]]
    quality: dict[str, Any]
    template: bytes = field(repr=False)  # the embedding, sealed by the template key (keys/templates.py)
    created_at: float
    user_id: str | None = None
    # a small JPEG of the face sealed by the template key (vision/crop.py), kept by review-required
    # collections only; written with the face, read on its own (Store.face_crops)
    crop: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FaceChange:
    """Faces a committed write added or removed, with the collection's generation before and after
    it: what a vector index needs to follow the store without a rebuild (index/vector_index.py)."""

    collection_id: str
    before: int
    after: int
    seqs: dict[str, int]  # face id -> index id (seq) of each face added or removed, in seq order
    added: bool


@dataclass(frozen=True)
class ErasureResidue:
    """Erased face templates whose ciphertext the engine may still keep (see
    Store.erasure_residue), sealed under the template key with fingerprint ``template_key``."""

    template_key: str
    faces: int
    first_erased_at: float
    last_erased_at: float
    retired_at: float | None  # when that key was replaced: from then on, unreadable


@dataclass(frozen=True)
class FaceChanges:
    """What changed in a collection's faces since a generation, read from the store's change log
    in one snapshot: the faces added since and still there (index ids and sealed templates, in
    seq order) and the index ids of faces removed since that were there at the generation."""

    generation: int  # the collection's generation now
    added_seqs: list[int]
    added_templates: list[tuple[str, bytes]]  # (face id, sealed template)
    removed_seqs: list[int]


@dataclass(frozen=True)
class UserRecord:
    collection_id: str
    user_id: str
    created_at: float
    face_count: int = 0


@dataclass(frozen=True)
class CollectionPolicy:
    """What a collection demands of its users. None / False: no such demand."""

    purpose_required: bool = False
    min_threshold: float | None = None
    max_results: int | None = None
    retention_days: int | None = None
    consent_required: bool = False
    review_required: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ConsentRecord:
    consent_id: str
    collection_id: str
    external_image_id: str
    basis: str
    reference: str
    obtained_at: float
    expires_at: float | None
    withdrawn_at: float | None
    created_at: float

    def active(self, now: float) -> bool:
        return (
            self.withdrawn_at is None and self.obtained_at <= now and (self.expires_at is None or now < self.expires_at)
        )


# a candidate is VERIFIED by this many different reviewers' confirmations (and no rejection); the
# store's listing of open cases counts the same (store/sql/accountability.py)
CONFIRMATIONS_TO_VERIFY = 2


@dataclass
class Candidate:
    face_id: str
    similarity: float
    decisions: list[dict[str, object]] = field(default_factory=list)  # reviewer, decision, note, decided_at

    @property
    def status(self) -> str:
        """VERIFIED once two different reviewers confirmed and nobody rejected; REJECTED once
        anyone rejected; UNVERIFIED until then. Doubt never verifies a match."""
        confirmers = {d["reviewer"] for d in self.decisions if d["decision"] == "confirm"}
        if any(d["decision"] == "reject" for d in self.decisions):
            return "REJECTED"
        return "VERIFIED" if len(confirmers) >= CONFIRMATIONS_TO_VERIFY else "UNVERIFIED"


@dataclass
class ReviewCase:
    """The candidates one search returned in a review_required collection, and the decisions."""

    case_id: str
    collection_id: str
    operation: str
    opened_by: str
    opened_at: float
    purpose: str | None
    case_ref: str | None
    probe: str  # SHA-256 of the probe image, or the probe face id
    candidates: list[Candidate]
    # the probe face's crop sealed by the template key, for a search by image (read on its own,
    # ReviewRepository.probe_crop)
    probe_crop: bytes | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        if any(c.status == "UNVERIFIED" for c in self.candidates):
            return "OPEN"
        return "CLOSED"


@dataclass(frozen=True)
class VideoJob:
    """A stored-video job: what was asked (``request``: the video, collection, threshold, job tag),
    by whom and why (to ledger its end under the same key, purpose and case), and how it stands.
    ``status``: IN_PROGRESS, SUCCEEDED or FAILED."""

    job_id: str
    kind: str  # FaceDetection | FaceSearch
    status: str
    status_message: str | None
    collection_id: str | None
    request: dict[str, Any]
    access_key_id: str
    role: str
    collections: tuple[str, ...] | None
    purpose: str | None
    case_ref: str | None
    created_at: float
    finished_at: float | None = None
    claimed_by: str | None = None
    lease_expires_at: float | None = None
    attempts: int = 0
    video_metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class VideoJobResult:
    """One item of a job's results (a face at a time; a tracked person and its matches), in the
    shape GetFaceDetection / GetFaceSearch answer it."""

    timestamp_ms: int
    person: int | None
    result: dict[str, Any]


@dataclass(frozen=True)
class ConsoleSession:
    """A sign-in to the web console: the SHA-256 of its token (the token itself is only in the
    browser's cookie), whose key, and until when it holds."""

    token_sha256: str
    access_key_id: str
    started_at: float
    last_seen_at: float
    expires_at: float


@dataclass(frozen=True)
class AccessKey:
    """An API credential. ``collections`` None means every collection."""

    access_key_id: str
    role: str
    collections: tuple[str, ...] | None
    enabled: bool
    created_at: float
    description: str | None = None


GENESIS = "0" * 64  # the "previous hash" of the ledger's first entry


@dataclass
class LedgerEntry:
    """One operation. Times are Unix seconds; ``input_sha256`` hashes each input image;
    ``result`` summarises what came back (face ids and similarities, or counts); ``outcome`` is
    ``ok``, ``denied`` or ``error`` (then ``error`` names it). ``seq`` is given by the store."""

    operation: str
    started_at: float
    access_key_id: str
    role: str
    collection_id: str | None = None
    input_sha256: list[str] = field(default_factory=list)
    purpose: str | None = None
    case_ref: str | None = None
    ended_at: float | None = None
    outcome: str = "ok"
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None

    def export_line(self) -> str:
        """The entry as one line of an export (JSON Lines: ``faceledger audit export`` and the web
        console's export alike)."""
        return json.dumps(asdict(self), sort_keys=True)

    def content(self) -> str:
        """The canonical text the chain hashes (ledger/chain.py)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), default=str)
