"""Schema migrations, applied in order at open; the engine records the last one applied
(SQLite: ``PRAGMA user_version``; PostgreSQL: the ``schema_version`` table).

They are written once, in SQLite's types, and each engine renders a statement in its own
(store/postgresql/: BYTEA for BLOB, DOUBLE PRECISION for REAL, ...), so that both engines hold the
same tables at the same version. Never edit a migration that has shipped: append a new one.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faceledger.store.sql.database import Connection, Database

MIGRATIONS: tuple[str, ...] = (
    # 1: collections, users, indexed images and faces.
    """
    CREATE TABLE collections (
        collection_id      TEXT PRIMARY KEY,
        created_at         REAL NOT NULL,
        face_model_version TEXT NOT NULL,
        -- bumped in the same transaction as every face add/delete, so an in-memory index can
        -- tell cheaply whether it is still in step with the store
        generation         INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE users (
        collection_id TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
        user_id       TEXT NOT NULL,
        created_at    REAL NOT NULL,
        PRIMARY KEY (collection_id, user_id)
    );
    CREATE TABLE images (
        image_id          TEXT PRIMARY KEY,
        collection_id     TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
        image_sha256      TEXT NOT NULL,
        external_image_id TEXT,
        width             INTEGER NOT NULL,
        height            INTEGER NOT NULL,
        face_count        INTEGER NOT NULL,
        indexed_at        REAL NOT NULL,
        source_path       TEXT,
        content           BLOB
    );
    CREATE INDEX images_by_sha ON images (collection_id, image_sha256);
    CREATE TABLE faces (
        seq               INTEGER PRIMARY KEY AUTOINCREMENT,  -- the vector index's id
        face_id           TEXT NOT NULL UNIQUE,
        collection_id     TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
        image_id          TEXT NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
        external_image_id TEXT,
        image_sha256      TEXT NOT NULL,
        bounding_box      TEXT NOT NULL,
        confidence        REAL NOT NULL,
        landmarks         TEXT NOT NULL,
        quality           TEXT NOT NULL,
        embedding         BLOB NOT NULL,
        created_at        REAL NOT NULL,
        user_id           TEXT,
        FOREIGN KEY (collection_id, user_id) REFERENCES users (collection_id, user_id)
    );
    CREATE INDEX faces_by_collection ON faces (collection_id, seq);
    CREATE INDEX faces_by_user ON faces (collection_id, user_id);
    """,
    # 2: access keys for the HTTP API, collection tags, idempotency tokens.
    """
    CREATE TABLE access_keys (
        access_key_id     TEXT PRIMARY KEY,
        -- AES-GCM ciphertext of the secret under the secrets key, which is never in this file
        secret_ciphertext BLOB NOT NULL,
        secret_nonce      BLOB NOT NULL,
        role              TEXT NOT NULL,
        collections       TEXT,           -- JSON list of collection ids; NULL = all
        enabled           INTEGER NOT NULL DEFAULT 1,
        description       TEXT,
        created_at        REAL NOT NULL
    );
    CREATE TABLE collection_tags (
        collection_id TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
        tag_key       TEXT NOT NULL,
        tag_value     TEXT NOT NULL,
        PRIMARY KEY (collection_id, tag_key)
    );
    CREATE TABLE request_tokens (
        token         TEXT NOT NULL,
        operation     TEXT NOT NULL,
        request_hash  TEXT NOT NULL,
        response      TEXT NOT NULL,
        created_at    REAL NOT NULL,
        PRIMARY KEY (operation, token)
    );
    """,
    # 3: a collection's own threshold table (faceledger calibrate --collection).
    """
    CREATE TABLE collection_thresholds (
        collection_id TEXT PRIMARY KEY REFERENCES collections(collection_id) ON DELETE CASCADE,
        threshold_table TEXT NOT NULL,  -- JSON, see faceledger/vision/calibration.py
        created_at    REAL NOT NULL
    );
    """,
    # 4: store facts, such as which key seals the face templates.
    """
    CREATE TABLE store_meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 5: the audit ledger (see faceledger/ledger/chain.py).
    """
    CREATE TABLE ledger (
        seq           INTEGER PRIMARY KEY,
        operation     TEXT NOT NULL,
        started_at    REAL NOT NULL,
        ended_at      REAL,
        access_key_id TEXT NOT NULL,
        role          TEXT NOT NULL,
        collection_id TEXT,
        input_sha256  TEXT NOT NULL,
        purpose       TEXT,
        case_ref      TEXT,
        outcome       TEXT NOT NULL,
        error         TEXT,
        result        TEXT NOT NULL,
        prev_hash     TEXT NOT NULL,
        entry_hash    TEXT NOT NULL
    );
    CREATE INDEX ledger_by_time ON ledger (started_at);
    CREATE INDEX ledger_by_collection ON ledger (collection_id, seq);
    CREATE TABLE ledger_signatures (
        seq        INTEGER PRIMARY KEY,
        entry_hash TEXT NOT NULL,
        signature  BLOB NOT NULL,
        signed_at  REAL NOT NULL
    );
    """,
    # 6: collection policies and consent records.
    """
    CREATE TABLE collection_policies (
        collection_id    TEXT PRIMARY KEY REFERENCES collections(collection_id) ON DELETE CASCADE,
        purpose_required INTEGER NOT NULL DEFAULT 0,
        min_threshold    REAL,
        max_results      INTEGER,
        retention_days   INTEGER,
        consent_required INTEGER NOT NULL DEFAULT 0,
        review_required  INTEGER NOT NULL DEFAULT 0,
        updated_at       REAL NOT NULL
    );
    CREATE TABLE consents (
        consent_id        TEXT PRIMARY KEY,
        collection_id     TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
        external_image_id TEXT NOT NULL,
        basis             TEXT NOT NULL,
        reference         TEXT NOT NULL,
        obtained_at       REAL NOT NULL,
        expires_at        REAL,
        withdrawn_at      REAL,
        created_at        REAL NOT NULL
    );
    CREATE INDEX consents_by_subject ON consents (collection_id, external_image_id);
    """,
    # 7: human review of matches in review_required collections.
    """
    CREATE TABLE review_cases (
        case_id       TEXT PRIMARY KEY,
        collection_id TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
        operation     TEXT NOT NULL,
        opened_by     TEXT NOT NULL,
        opened_at     REAL NOT NULL,
        purpose       TEXT,
        case_ref      TEXT,
        probe         TEXT NOT NULL  -- SHA-256 of the probe image, or the probe face id
    );
    CREATE TABLE review_candidates (
        case_id    TEXT NOT NULL REFERENCES review_cases(case_id) ON DELETE CASCADE,
        face_id    TEXT NOT NULL,
        similarity REAL NOT NULL,
        PRIMARY KEY (case_id, face_id)
    );
    CREATE TABLE review_decisions (
        case_id    TEXT NOT NULL,
        face_id    TEXT NOT NULL,
        reviewer   TEXT NOT NULL,
        decision   TEXT NOT NULL,  -- confirm | reject
        note       TEXT NOT NULL,
        decided_at REAL NOT NULL,
        PRIMARY KEY (case_id, face_id, reviewer),
        FOREIGN KEY (case_id, face_id) REFERENCES review_candidates (case_id, face_id) ON DELETE CASCADE
    );
    """,
    # 8: cohort score normalisation: the collection whose faces a collection's searches are
    # normalised against (vision/cohort.py). Deleting the cohort collection ends the normalisation.
    """
    CREATE TABLE collection_cohorts (
        collection_id        TEXT PRIMARY KEY REFERENCES collections(collection_id) ON DELETE CASCADE,
        cohort_collection_id TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
        updated_at           REAL NOT NULL
    );
    """,
    # 9: every node keeps its vector indexes in step from a log of face changes. A collection's
    # generation becomes the number of its last change, drawn from one counter for the whole
    # store: never reused, so that a collection deleted and created again never shows another
    # node the generation its old index was at. Each change records the index ids it added or
    # removed, so a node behind applies them instead of reading the whole collection again.
    """
    CREATE TABLE change_counter (
        last_change INTEGER NOT NULL
    );
    INSERT INTO change_counter (last_change) SELECT COALESCE(MAX(generation), 0) FROM collections;
    CREATE TABLE face_changes (
        collection_id TEXT NOT NULL REFERENCES collections(collection_id) ON DELETE CASCADE,
        generation    INTEGER NOT NULL,
        previous      INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        seqs          TEXT NOT NULL,
        PRIMARY KEY (collection_id, generation)
    );
    """,
    # 10: erased templates that an engine may keep as ciphertext after deleting them (PostgreSQL:
    # dead rows until VACUUM reuses their space, WAL, replicas, backups), counted by the template
    # key that sealed them: they are unreadable once that key is retired (a rotation), and not
    # before. docs/scaling.md says why.
    """
    CREATE TABLE erasure_residue (
        template_key    TEXT PRIMARY KEY,
        faces           INTEGER NOT NULL,
        first_erased_at REAL NOT NULL,
        last_erased_at  REAL NOT NULL,
        retired_at      REAL
    );
    """,
    # 11: signatures of the requests run that change data, until they expire, so that a captured
    # request is refused by every node of the store, not only by the one that ran it (api/replay.py).
    """
    CREATE TABLE seen_signatures (
        signature  TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    );
    CREATE INDEX seen_signatures_by_expiry ON seen_signatures (expires_at);
    """,
    # 12: what human review needs to be done in a browser (faceledger/console/). Review-required
    # collections keep a small crop of each indexed face and of each search's probe, sealed under
    # the template key like the templates, and gone with the face (or the case). Console sign-ins
    # are kept here, so that every node knows them and a sign-out ends them everywhere; only the
    # SHA-256 of each session token is stored, so the database alone signs nobody in.
    """
    CREATE TABLE face_crops (
        face_id TEXT PRIMARY KEY REFERENCES faces(face_id) ON DELETE CASCADE,
        crop    BLOB NOT NULL
    );
    CREATE TABLE review_probe_crops (
        case_id TEXT PRIMARY KEY REFERENCES review_cases(case_id) ON DELETE CASCADE,
        crop    BLOB NOT NULL
    );
    CREATE TABLE console_sessions (
        token_sha256  TEXT PRIMARY KEY,
        access_key_id TEXT NOT NULL REFERENCES access_keys(access_key_id) ON DELETE CASCADE,
        started_at    REAL NOT NULL,
        last_seen_at  REAL NOT NULL,
        expires_at    REAL NOT NULL
    );
    CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
    """,
    # 13: stored-video jobs (StartFaceDetection, StartFaceSearch), durable: a job outlives the
    # process that runs it, which holds it by a lease it renews; a job whose lease ran out (its
    # process died) is taken up again by another, or failed after too many attempts. Results are
    # written with the job's end, in the same transaction as its ledger entry.
    """
    CREATE TABLE video_jobs (
        job_id           TEXT PRIMARY KEY,
        kind             TEXT NOT NULL,
        status           TEXT NOT NULL,
        status_message   TEXT,
        collection_id    TEXT REFERENCES collections(collection_id) ON DELETE CASCADE,
        request          TEXT NOT NULL,
        access_key_id    TEXT NOT NULL,
        role             TEXT NOT NULL,
        collections      TEXT,
        purpose          TEXT,
        case_ref         TEXT,
        created_at       REAL NOT NULL,
        finished_at      REAL,
        claimed_by       TEXT,
        lease_expires_at REAL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        video_metadata   TEXT
    );
    CREATE INDEX video_jobs_by_status ON video_jobs (status, created_at);
    CREATE TABLE video_job_results (
        job_id       TEXT NOT NULL REFERENCES video_jobs(job_id) ON DELETE CASCADE,
        position     INTEGER NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        person       INTEGER,
        result       TEXT NOT NULL,
        PRIMARY KEY (job_id, position)
    );
    CREATE INDEX video_job_results_by_person ON video_job_results (job_id, person, timestamp_ms);
    """,
    # 14: review cases are listed a page at a time in the order they were opened (ListReviewCases)
    """
    CREATE INDEX review_cases_by_opening ON review_cases (opened_at, case_id);
    CREATE INDEX review_cases_by_collection ON review_cases (collection_id, opened_at, case_id);
    """,
)


def migrate(database: Database, connection: Connection) -> int:
    """Bring the schema up to date; returns the schema version now in force."""
    current = database.schema_version(connection)
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"The database has schema version {current}, newer than this faceledger "
            f"({len(MIGRATIONS)}); upgrade faceledger."
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        database.begin_migration(connection)
        try:
            # another process opening the same new database may have run it meanwhile: read again
            # under the write lock, and apply only what is still missing
            if database.schema_version(connection) >= version:
                connection.execute("ROLLBACK")
                continue
            for statement in _statements(MIGRATIONS[version - 1]):
                connection.execute(database.render_ddl(statement))
            database.set_schema_version(connection, version)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """The complete statements of a migration script (``executescript`` would commit the
    transaction it runs in)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete statement in a migration: {pending.strip()[:80]}")
    return statements
