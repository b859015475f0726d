"""The store interface: what the service needs from a source of truth, whatever the engine.

A backend (store/sqlite/ today) implements :class:`Store` and its repositories. The contract
every backend must keep is written down as tests (tests/test_store_contract.py):

- **Unit of work.** Every write made inside :meth:`Store.unit_of_work` commits together or not at
  all; callbacks given to :meth:`Store.after_commit` run once it has committed, never after a
  rollback. Nested units join the outermost one. A write outside a unit is its own transaction.
- **Generations.** Every change to a collection's faces gives it a new generation in the same
  transaction (the store's next change number: never reused, not even by a collection created
  again under the same id) and is returned as a :class:`FaceChange` (generations before and
  after, index ids), so an in-memory vector index can apply the change or notice it missed one
  (index/vector_index.py). The changes are also logged, so that an index that missed some (made
  by another process or node) catches up with :meth:`Store.face_changes_since`.
- **Opaque templates.** Face templates arrive sealed (keys/templates.py) and leave as they came;
  the store never sees an embedding in the clear and holds no key.
- **Errors.** Missing things raise ResourceNotFoundException, duplicates
  ResourceAlreadyExistsException or ConflictException, as Rekognition names them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from faceledger.store.records import (
    AccessKey,
    CollectionPolicy,
    CollectionRecord,
    ConsentRecord,
    ConsoleSession,
    ErasureResidue,
    FaceChange,
    FaceChanges,
    FaceRecord,
    ImageRecord,
    LedgerEntry,
    ReviewCase,
    UserRecord,
    VideoJob,
    VideoJobResult,
)

# A sealed template and a function that re-seals it: (face_id, sealed) -> sealed under a new key.
Reseal = Callable[[str, bytes], bytes]


def crop_label(face_id: str) -> str:
    """What a face's crop is sealed under (its template is sealed under the face id itself), so
    that neither opens in the other's place."""
    return f"crop:{face_id}"


def probe_crop_label(case_id: str) -> str:
    return f"probe:{case_id}"


class PolicyRepository(ABC):
    """Collection policies and consent records (service/policy_operations.py decides what they mean)."""

    @abstractmethod
    def policy(self, collection_id: str) -> CollectionPolicy:
        """The collection's policy (the default policy when none was set)."""

    @abstractmethod
    def update_policy(
        self, collection_id: str, change: Callable[[CollectionPolicy], CollectionPolicy], updated_at: float
    ) -> tuple[CollectionPolicy, CollectionPolicy]:
        """Read the policy and write ``change(policy)`` in one write transaction, so that no
        other writer's change comes between (``change`` may raise to write nothing); (before,
        after)."""

    @abstractmethod
    def retained_collections(self) -> list[tuple[str, int]]:
        """(collection id, retention days) of every collection with a retention period."""

    @abstractmethod
    def add_consent(self, record: ConsentRecord) -> None: ...

    @abstractmethod
    def consents(self, collection_id: str, external_image_id: str | None = None) -> list[ConsentRecord]: ...

    @abstractmethod
    def withdraw(self, consent_id: str, at: float) -> ConsentRecord | None:
        """Mark the consent withdrawn (once); the record as it now stands, None if unknown."""

    @abstractmethod
    def expired_consents(self, now: float) -> list[ConsentRecord]: ...


class ReviewRepository(ABC):
    @abstractmethod
    def open_case(self, case: ReviewCase) -> None: ...

    @abstractmethod
    def case(self, case_id: str) -> ReviewCase | None: ...

    @abstractmethod
    def case_positions(
        self,
        collection_id: str | None = None,
        *,
        visible: Sequence[str] | None = None,
        status: str | None = None,
        opened_by: str | None = None,
        awaiting: str | None = None,
        after: tuple[float, str] | None = None,
        limit: int | None = None,
    ) -> list[tuple[float, str]]:
        """The (opened_at, case_id) of cases, oldest first, of one collection or of all, only
        among the ``visible`` collections (None: all); ``status`` OPEN (a candidate is still
        UNVERIFIED) or CLOSED; ``opened_by`` one key's searches; ``awaiting`` a reviewer: the open
        cases that reviewer did not open and that have an UNVERIFIED candidate they have not
        decided; ``after`` the (opened_at, case_id) of the last case of the page before."""

    @abstractmethod
    def decide(self, case_id: str, face_id: str, reviewer: str, decision: str, note: str, at: float) -> None:
        """Record (or replace) this reviewer's decision on this candidate."""

    @abstractmethod
    def probe_crop(self, case_id: str) -> bytes | None:
        """The sealed crop of the case's probe face, if one was kept."""

    @abstractmethod
    def drop_probe_crops(self, collection_id: str, opened_before: float) -> int:
        """Forget the probe crops of the collection's cases opened before ``opened_before`` (its
        retention period is over); returns how many."""


class VideoJobRepository(ABC):
    """Stored-video jobs and their results (service/video_operations.py)."""

    @abstractmethod
    def create(self, job: VideoJob) -> None: ...

    @abstractmethod
    def get(self, job_id: str) -> VideoJob | None: ...

    @abstractmethod
    def claim(
        self, worker: str, now: float, lease_seconds: float, max_attempts: int, job_id: str | None = None
    ) -> VideoJob | None:
        """Take the oldest job in progress (or job ``job_id``) that nobody holds, or whose holder's
        lease ran out, for ``worker`` until ``now + lease_seconds``, counting an attempt; a job
        that has had ``max_attempts`` already is not taken (see :meth:`abandoned`)."""

    @abstractmethod
    def abandoned(self, now: float, max_attempts: int) -> list[VideoJob]:
        """Jobs in progress whose last holder's lease ran out after ``max_attempts`` attempts."""

    @abstractmethod
    def renew(self, job_id: str, worker: str, until: float) -> bool:
        """Extend ``worker``'s lease of the job; False if it no longer holds it."""

    @abstractmethod
    def finish(
        self,
        job_id: str,
        worker: str | None,
        status: str,
        message: str | None,
        metadata: dict[str, Any] | None,
        results: Sequence[VideoJobResult],
        at: float,
    ) -> bool:
        """End the job with ``status`` and its results (inside the caller's unit of work); False,
        writing nothing, if ``worker`` no longer holds it (None: whoever holds it)."""

    @abstractmethod
    def results(self, job_id: str, by_person: bool, offset: int, limit: int) -> list[VideoJobResult]:
        """A page of a job's results, by timestamp (or by person, then timestamp)."""

    @abstractmethod
    def forget_finished(self, before: float) -> int:
        """Delete jobs (and results) that finished before ``before``; returns how many."""


class ConsoleSessionRepository(ABC):
    """Sign-ins to the web console, by the SHA-256 of their tokens (service/console_sessions.py)."""

    @abstractmethod
    def start(self, session: ConsoleSession, expired_before: float) -> None:
        """Record a sign-in, forgetting those that expired before ``expired_before``."""

    @abstractmethod
    def get(self, token_sha256: str) -> ConsoleSession | None: ...

    @abstractmethod
    def touch(self, token_sha256: str, at: float) -> None:
        """Record that the session was used at ``at``."""

    @abstractmethod
    def end(self, token_sha256: str) -> bool:
        """Forget a sign-in; False if there was none."""


class AccessKeyRepository(ABC):
    """API keys with their secrets sealed by the caller (service/access.py); never in the clear."""

    @abstractmethod
    def add(self, key: AccessKey, sealed_secret: bytes) -> None: ...

    @abstractmethod
    def get(self, access_key_id: str) -> AccessKey | None: ...

    @abstractmethod
    def sealed_secret(self, access_key_id: str) -> bytes | None: ...

    @abstractmethod
    def list(self) -> list[AccessKey]: ...

    @abstractmethod
    def set_enabled(self, access_key_id: str, enabled: bool) -> None:
        """Raises ResourceNotFoundException for an unknown key."""

    @abstractmethod
    def delete(self, access_key_id: str) -> None:
        """Raises ResourceNotFoundException for an unknown key."""


class RequestTokenRepository(ABC):
    """ClientRequestToken records: a retried request gets the first answer, not a second effect."""

    @abstractmethod
    def find(self, operation: str, token: str, newer_than: float) -> tuple[str, dict] | None:
        """(request hash, response) recorded for this token after ``newer_than``."""

    @abstractmethod
    def record(self, operation: str, token: str, digest: str, response: dict, now: float, expire_before: float) -> None:
        """Record an answer (a concurrent retry's record, if first, stands) and forget those
        recorded before ``expire_before``."""


class LedgerRepository(ABC):
    """Rows of the audit ledger; ledger/chain.py hashes and signs them."""

    @abstractmethod
    def append(self, entry: LedgerEntry, chain: Callable[[str, LedgerEntry], str]) -> str:
        """Append ``entry`` after the current head, serialised against every other append: sets
        ``entry.seq`` and stores ``chain(previous hash, entry)`` as its hash, which it returns."""

    @abstractmethod
    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last entry, None for an empty ledger."""

    @abstractmethod
    def put_signature(self, seq: int, digest: str, signature: bytes, signed_at: float) -> None: ...

    @abstractmethod
    def entries(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        access_key_id: str | None = None,
        collection_id: str | None = None,
        case_ref: str | None = None,
        operation: str | None = None,
        outcome: str | None = None,
        purpose: str | None = None,
        collections: Sequence[str] | None = None,
        before_seq: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[LedgerEntry]:
        """Entries in ledger order (or newest first), filtered; ``limit`` counts from the first
        entry in that order. ``collections``: only entries of these collections (not those of
        none); ``before_seq``: only entries numbered below it (the next page, newest first)."""

    @abstractmethod
    def chained(self) -> Iterator[tuple[LedgerEntry, str, str]]:
        """Every entry with its stored previous hash and own hash, in ledger order."""

    @abstractmethod
    def signatures(self) -> Iterator[tuple[int, str, bytes]]:
        """Every (seq, hash, signature) of a signed head, in order."""

    @abstractmethod
    def last_signed(self) -> tuple[int, float] | None:
        """(seq, when signed) of the latest signed head, if any."""


class Store(ABC):
    """Collections, images, faces, users and tags, the accountability records beside them, and
    the unit of work that binds an operation's writes to its ledger entry."""

    policies: PolicyRepository
    reviews: ReviewRepository
    access_keys: AccessKeyRepository
    request_tokens: RequestTokenRepository
    ledger: LedgerRepository
    console_sessions: ConsoleSessionRepository
    video_jobs: VideoJobRepository

    # -- transactions ----------------------------------------------------------------------

    @abstractmethod
    def unit_of_work(self) -> AbstractContextManager[None]: ...

    @abstractmethod
    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current unit of work commits (at once outside one)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def erase_traces(self) -> None:
        """Make deleted rows unrecoverable from the store's own files (SQLite: fold and empty the
        write-ahead log; freed pages are zeroed as they are freed). Call after commit."""

    # -- template key ----------------------------------------------------------------------

    @abstractmethod
    def template_key(self) -> str | None:
        """Fingerprint of the key that sealed the templates (None: never recorded)."""

    @abstractmethod
    def erasure_residue(self) -> list[ErasureResidue]:
        """Erased templates the engine may still keep as ciphertext, by the key that sealed them
        (none on SQLite, which overwrites deleted rows and empties its WAL). Every erasure on such
        an engine is counted in its own transaction; a rotation of the template key marks the old
        key's residue retired."""

    @abstractmethod
    def remember_signature(self, signature: str, expires_at: float, now: float) -> bool:
        """Remember a request signature until ``expires_at`` (forgetting those expired by
        ``now``); False if it is remembered already (by any process on the store)."""

    @abstractmethod
    def store_fact(self, name: str) -> str | None:
        """A fact the store records about itself, if recorded: its ``store_id``, or the
        fingerprint of a key it is used with (``template_key``, ``ledger_key``, ``secrets_key``)."""

    @abstractmethod
    def record_store_fact(self, name: str, value: str) -> str:
        """Record ``value`` for the fact ``name`` unless one is recorded already; returns the one
        recorded (the first process's, where several record at once)."""

    @abstractmethod
    def reseal_templates(self, reseal: Reseal, fingerprint: str) -> int:
        """Replace every template by ``reseal(face_id, template)``, every face crop by
        ``reseal(crop_label(face_id), crop)`` and every probe crop by
        ``reseal(probe_crop_label(case_id), crop)``, and record ``fingerprint``, in one
        transaction; returns how many templates there were."""

    # -- collections -----------------------------------------------------------------------

    @abstractmethod
    def create_collection(
        self, collection_id: str, face_model_version: str, created_at: float, tags: dict[str, str] | None = None
    ) -> None: ...

    @abstractmethod
    def get_collection(self, collection_id: str) -> CollectionRecord: ...

    @abstractmethod
    def require_collection(self, collection_id: str) -> None: ...

    @abstractmethod
    def face_model_version(self, collection_id: str) -> str:
        """The face model version the collection was made with (cheap: no counting)."""

    @abstractmethod
    def list_collection_ids(self, after: str | None, limit: int, only: Sequence[str] | None = None) -> list[str]:
        """Collection ids after ``after`` in order, optionally only among ``only``."""

    @abstractmethod
    def delete_collection(self, collection_id: str) -> None: ...

    @abstractmethod
    def tag_collection(self, collection_id: str, tags: dict[str, str], max_tags: int) -> None:
        """Add or overwrite tags; ServiceQuotaExceededException past ``max_tags`` in all."""

    @abstractmethod
    def untag_collection(self, collection_id: str, tag_keys: Sequence[str]) -> None: ...

    @abstractmethod
    def collection_tags(self, collection_id: str) -> dict[str, str]: ...

    @abstractmethod
    def set_threshold_table(self, collection_id: str, table_json: str, created_at: float) -> None: ...

    @abstractmethod
    def threshold_table(self, collection_id: str) -> str | None: ...

    @abstractmethod
    def set_cohort_collection(self, collection_id: str, cohort_collection_id: str | None, updated_at: float) -> None:
        """Normalise the collection's searches against the faces of another collection (None:
        no more); both must exist."""

    @abstractmethod
    def cohort_collection(self, collection_id: str) -> str | None:
        """The collection the collection's searches are normalised against, if any (deleting
        either collection removes the link)."""

    @abstractmethod
    def generation(self, collection_id: str) -> int | None:
        """The number of the collection's last change, or None when it does not exist."""

    @abstractmethod
    def face_changes_since(self, collection_id: str, generation: int) -> FaceChanges | None:
        """What changed in the collection's faces since ``generation``, in one snapshot; None when
        the collection is gone, or the change log no longer reaches back that far, or a change
        since replaced every template (a move to another face model): read it all again."""

    @abstractmethod
    def watch_changes(self, changed: Callable[[str | None], None]) -> Callable[[], None] | None:
        """Call ``changed(collection_id)`` soon after any process commits a change of the
        collection's faces (``changed(None)``: changes may have been missed), until the returned
        function is called; None where the engine cannot push changes (then the generation read
        before each search is how a process learns of them)."""

    @abstractmethod
    def other_clients(self) -> int:
        """How many other faceledger processes (nodes) use this store now, where the engine can
        tell (PostgreSQL); 0 where processes share a data directory, whose lock tells instead."""

    @abstractmethod
    def duty(self, name: str) -> AbstractContextManager[bool]:
        """Try to hold the named background duty (``purge``, ``sign``) alone among all processes
        on this store for the enclosed block, without waiting; yields whether this one holds it."""

    # -- images and faces ------------------------------------------------------------------

    @abstractmethod
    def add_image(self, image: ImageRecord, faces: Sequence[FaceRecord], *, unique: bool = False) -> FaceChange | None:
        """Store an image and its faces atomically; the change gives each face its index id.
        ``unique``: store nothing, and return None, when the collection already holds an image
        with the same SHA-256 (decided in the same transaction, so concurrent writers agree)."""

    @abstractmethod
    def find_image(self, collection_id: str, image_sha256: str) -> ImageRecord | None: ...

    @abstractmethod
    def list_images(self, collection_id: str) -> Iterator[ImageRecord]:
        """Every image of the collection, with its stored content where it was kept, one at a
        time (stored pixels can be many megabytes each)."""

    @abstractmethod
    def move_to_model(self, collection_id: str, face_model_version: str, templates: dict[str, bytes]) -> None:
        """In one transaction: record ``face_model_version`` for the collection and replace the
        template of every face in ``templates`` (a face id to its new sealed template). The
        generation moves on."""

    @abstractmethod
    def list_faces(
        self,
        collection_id: str,
        *,
        after_seq: int = 0,
        limit: int = 1000,
        user_id: str | None = None,
        face_ids: Sequence[str] | None = None,
    ) -> list[tuple[int, FaceRecord]]:
        """Faces in index-id order after ``after_seq``, optionally of one user or among ids."""

    @abstractmethod
    def faces_by_seq(self, collection_id: str, seqs: Sequence[int]) -> dict[int, FaceRecord]: ...

    @abstractmethod
    def face_crops(self, collection_id: str, face_ids: Sequence[str]) -> dict[str, bytes]:
        """The sealed crops kept of these faces of the collection (a face without one is absent)."""

    @abstractmethod
    def drop_face_crops(self, collection_id: str) -> int:
        """Forget every face crop of the collection (it no longer requires review); returns how many."""

    @abstractmethod
    def get_face(self, collection_id: str, face_id: str) -> tuple[int, FaceRecord]: ...

    @abstractmethod
    def load_templates(self, collection_id: str) -> tuple[list[int], list[tuple[str, bytes]], int]:
        """All of a collection's index ids, (face id, sealed template) and generation, in one
        snapshot."""

    @abstractmethod
    def delete_faces(self, collection_id: str, face_ids: Sequence[str]) -> FaceChange:
        """Delete faces (and images left without any); the change names those that existed. Any
        number of ids: a backend splits what its statements cannot hold."""

    @abstractmethod
    def face_ids_where(
        self,
        collection_id: str,
        *,
        created_before: float | None = None,
        external_image_id: str | None = None,
        id_prefix: str | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """Ids of faces indexed before a time, from images with an ExternalImageId, or whose id
        starts with ``id_prefix`` (at most ``limit``, oldest first)."""

    # -- users -----------------------------------------------------------------------------

    @abstractmethod
    def create_user(self, collection_id: str, user_id: str, created_at: float) -> None: ...

    @abstractmethod
    def delete_user(self, collection_id: str, user_id: str) -> None:
        """Delete a user; its faces stay in the collection, no longer associated."""

    @abstractmethod
    def get_user(self, collection_id: str, user_id: str) -> UserRecord: ...

    @abstractmethod
    def list_users(self, collection_id: str, after: str | None, limit: int) -> list[UserRecord]: ...

    @abstractmethod
    def set_face_users(self, collection_id: str, face_ids: Sequence[str], user_id: str | None) -> None:
        """Associate faces with ``user_id`` (or clear their association when None)."""
