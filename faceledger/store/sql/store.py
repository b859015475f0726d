"""The SQL store: collections, images, faces, users and tags, on any engine of store/sql/database.py.

Each operation that changes faces is one transaction (see database.py), so a crash in the
middle of indexing an image leaves either all of its faces or none. The SQL is written once, in
what SQLite and PostgreSQL both speak; nothing here relies on an engine's error for a decision
(a failed statement aborts a PostgreSQL transaction): duplicates are found with ``ON CONFLICT DO
NOTHING`` and the count of rows written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

from faceledger.errors import (
    ConflictException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
)
from faceledger.store.interface import Reseal, Store, crop_label, probe_crop_label
from faceledger.store.records import (
    CollectionRecord,
    ErasureResidue,
    FaceChange,
    FaceChanges,
    FaceRecord,
    ImageRecord,
    UserRecord,
)
from faceledger.store.sql.accountability import (
    SQLAccessKeys,
    SQLConsoleSessions,
    SQLLedger,
    SQLPolicies,
    SQLRequestTokens,
    SQLReviews,
)
from faceledger.store.sql.database import Connection, Database
from faceledger.store.sql.video_jobs import SQLVideoJobs

T = TypeVar("T")
# How many of the store's latest changes the face change log keeps: a node that fell further
# behind on a collection reads the whole collection again instead.
CHANGE_LOG_KEPT = 100_000
_RESEAL_BATCH = 1000  # crops resealed per statement at a key rotation

_FACE_COLUMNS = (
    "face_id, collection_id, image_id, external_image_id, image_sha256, bounding_box, confidence,"
    " landmarks, quality, embedding, created_at, user_id"
)


class SQLStore(Store):
    """Everything of one data directory in one SQL database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.policies = SQLPolicies(self.database)
        self.reviews = SQLReviews(self.database)
        self.access_keys = SQLAccessKeys(self.database)
        self.request_tokens = SQLRequestTokens(self.database)
        self.ledger = SQLLedger(self.database)
        self.console_sessions = SQLConsoleSessions(self.database)
        self.video_jobs = SQLVideoJobs(self.database)

    def describe(self) -> str:
        """Where the store is, for messages (never with a password)."""
        return self.database.describe()

    def unit_of_work(self) -> AbstractContextManager[None]:
        return self.database.unit_of_work()

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.database.after_commit(callback)

    def close(self) -> None:
        self.database.close()

    def erase_traces(self) -> None:
        self.database.erase_traces()

    def template_key(self) -> str | None:
        return self.store_fact("template_key")

    def remember_signature(self, signature: str, expires_at: float, now: float) -> bool:
        with self.database.write() as db:
            db.execute("DELETE FROM seen_signatures WHERE expires_at < ?", (now,))
            inserted = db.execute(
                "INSERT INTO seen_signatures (signature, expires_at) VALUES (?, ?) ON CONFLICT (signature) DO NOTHING",
                (signature, expires_at),
            )
            return inserted.rowcount == 1

    def store_fact(self, name: str) -> str | None:
        row = self.database.connection().execute("SELECT value FROM store_meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def record_store_fact(self, name: str, value: str) -> str:
        with self.database.write() as db:
            db.execute(
                "INSERT INTO store_meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, value)
            )
            return str(self.store_fact(name))  # on this thread's connection: inside the write

    def reseal_templates(self, reseal: Reseal, fingerprint: str) -> int:
        with self.database.write() as db:
            rows = db.execute("SELECT face_id, embedding FROM faces").fetchall()
            db.executemany(
                "UPDATE faces SET embedding = ? WHERE face_id = ?",
                [(reseal(face_id, sealed), face_id) for face_id, sealed in rows],
            )
            _reseal_crops(db, "face_crops", "face_id", lambda face_id, crop: reseal(crop_label(face_id), crop))
            _reseal_crops(
                db, "review_probe_crops", "case_id", lambda case_id, crop: reseal(probe_crop_label(case_id), crop)
            )
            db.execute(
                "INSERT INTO store_meta (name, value) VALUES ('template_key', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (fingerprint,),
            )
            # what the old key sealed, wherever it remains, is unreadable once the key is gone
            db.execute(
                "UPDATE erasure_residue SET retired_at = ? WHERE template_key <> ? AND retired_at IS NULL",
                (time.time(), fingerprint),
            )
        return len(rows)

    # -- collections -----------------------------------------------------------------------

    def create_collection(
        self, collection_id: str, face_model_version: str, created_at: float, tags: dict[str, str] | None = None
    ) -> None:
        with self.database.write() as db:
            created = db.execute(
                "INSERT INTO collections (collection_id, created_at, face_model_version, generation)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (collection_id) DO NOTHING",
                (collection_id, created_at, face_model_version, _next_change(db)),
            )
            if created.rowcount == 0:
                raise ResourceAlreadyExistsException(f"Collection {collection_id!r} already exists.")
            _put_tags(db, collection_id, tags or {})

    def tag_collection(self, collection_id: str, tags: dict[str, str], max_tags: int) -> None:
        """Add or overwrite tags; refuses to go over ``max_tags`` tags in all."""
        with self.database.write() as db:
            _require_collection(db, collection_id)
            _put_tags(db, collection_id, tags)
            count = db.execute(
                "SELECT COUNT(*) FROM collection_tags WHERE collection_id = ?", (collection_id,)
            ).fetchone()[0]
            if count > max_tags:
                raise ServiceQuotaExceededException(
                    f"A collection holds at most {max_tags} tags; this would make {count}."
                )

    def untag_collection(self, collection_id: str, tag_keys: Sequence[str]) -> None:
        with self.database.write() as db:
            _require_collection(db, collection_id)
            db.executemany(
                "DELETE FROM collection_tags WHERE collection_id = ? AND tag_key = ?",
                [(collection_id, key) for key in tag_keys],
            )

    def collection_tags(self, collection_id: str) -> dict[str, str]:
        with self.database.snapshot() as db:
            _require_collection(db, collection_id)
            rows = db.execute(
                "SELECT tag_key, tag_value FROM collection_tags WHERE collection_id = ? ORDER BY tag_key",
                (collection_id,),
            ).fetchall()
        return dict(rows)

    def get_collection(self, collection_id: str) -> CollectionRecord:
        row = (
            self.database.connection()
            .execute(
                "SELECT collection_id, created_at, face_model_version,"
                " (SELECT COUNT(*) FROM faces f WHERE f.collection_id = c.collection_id),"
                " (SELECT COUNT(*) FROM users u WHERE u.collection_id = c.collection_id)"
                " FROM collections c WHERE collection_id = ?",
                (collection_id,),
            )
            .fetchone()
        )
        if row is None:
            raise _collection_not_found(collection_id)
        return CollectionRecord(*row)

    def face_model_version(self, collection_id: str) -> str:
        row = (
            self.database.connection()
            .execute("SELECT face_model_version FROM collections WHERE collection_id = ?", (collection_id,))
            .fetchone()
        )
        if row is None:
            raise _collection_not_found(collection_id)
        return str(row[0])

    def require_collection(self, collection_id: str) -> None:
        if self.generation(collection_id) is None:
            raise _collection_not_found(collection_id)

    def list_collection_ids(self, after: str | None, limit: int, only: Sequence[str] | None = None) -> list[str]:
        """Collection ids after ``after`` in order, optionally only among ``only``."""
        sql = "SELECT collection_id FROM collections WHERE collection_id > ?"
        params: list[object] = [after or ""]
        if only is not None:
            sql += f" AND collection_id IN ({','.join('?' * len(only))})"
            params.extend(only)
        rows = self.database.connection().execute(sql + " ORDER BY collection_id LIMIT ?", [*params, limit])
        return [row[0] for row in rows]

    def delete_collection(self, collection_id: str) -> None:
        with self.database.write() as db:
            # faces first: their foreign key to users would otherwise block the cascade order
            faces = db.execute("DELETE FROM faces WHERE collection_id = ?", (collection_id,)).rowcount
            deleted = db.execute("DELETE FROM collections WHERE collection_id = ?", (collection_id,))
            if deleted.rowcount == 0:
                raise _collection_not_found(collection_id)
            self._count_residue(db, faces)

    def set_threshold_table(self, collection_id: str, table_json: str, created_at: float) -> None:
        with self.database.write() as db:
            _require_collection(db, collection_id)
            db.execute(
                "INSERT INTO collection_thresholds (collection_id, threshold_table, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (collection_id) DO UPDATE SET threshold_table = excluded.threshold_table,"
                " created_at = excluded.created_at",
                (collection_id, table_json, created_at),
            )

    def threshold_table(self, collection_id: str) -> str | None:
        row = (
            self.database.connection()
            .execute("SELECT threshold_table FROM collection_thresholds WHERE collection_id = ?", (collection_id,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def set_cohort_collection(self, collection_id: str, cohort_collection_id: str | None, updated_at: float) -> None:
        with self.database.write() as db:
            _require_collection(db, collection_id)
            if cohort_collection_id is None:
                db.execute("DELETE FROM collection_cohorts WHERE collection_id = ?", (collection_id,))
                return
            _require_collection(db, cohort_collection_id)
            db.execute(
                "INSERT INTO collection_cohorts (collection_id, cohort_collection_id, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (collection_id) DO UPDATE SET cohort_collection_id = excluded.cohort_collection_id,"
                " updated_at = excluded.updated_at",
                (collection_id, cohort_collection_id, updated_at),
            )

    def cohort_collection(self, collection_id: str) -> str | None:
        row = (
            self.database.connection()
            .execute("SELECT cohort_collection_id FROM collection_cohorts WHERE collection_id = ?", (collection_id,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def watch_changes(self, changed: Callable[[str | None], None]) -> Callable[[], None] | None:
        return self.database.watch(changed)

    def duty(self, name: str) -> AbstractContextManager[bool]:
        return self.database.duty(name)

    def other_clients(self) -> int:
        return self.database.other_clients()

    def generation(self, collection_id: str) -> int | None:
        """The collection's change counter, or None when it does not exist."""
        row = (
            self.database.connection()
            .execute("SELECT generation FROM collections WHERE collection_id = ?", (collection_id,))
            .fetchone()
        )
        return None if row is None else int(row[0])

    # -- images and faces ------------------------------------------------------------------

    def add_image(self, image: ImageRecord, faces: Sequence[FaceRecord], *, unique: bool = False) -> FaceChange | None:
        with self.database.write() as db:  # BEGIN IMMEDIATE: the check below and the insert are one
            if (
                unique
                and db.execute(
                    "SELECT 1 FROM images WHERE collection_id = ? AND image_sha256 = ? LIMIT 1",
                    (image.collection_id, image.image_sha256),
                ).fetchone()
            ):
                return None
            before, after = self._bump_generation(db, image.collection_id)
            db.execute(
                "INSERT INTO images (image_id, collection_id, image_sha256, external_image_id, width,"
                " height, face_count, indexed_at, source_path, content)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    image.image_id,
                    image.collection_id,
                    image.image_sha256,
                    image.external_image_id,
                    image.width,
                    image.height,
                    image.face_count,
                    image.indexed_at,
                    image.source_path,
                    image.content,
                ),
            )
            seqs = [
                db.execute(
                    f"INSERT INTO faces ({_FACE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                    self._face_row(face),
                ).fetchone()[0]
                for face in faces
            ]
            db.executemany(
                "INSERT INTO face_crops (face_id, crop) VALUES (?, ?)",
                [(face.face_id, face.crop) for face in faces if face.crop is not None],
            )
            _log_change(db, image.collection_id, before, after, "added", seqs)
        return FaceChange(
            image.collection_id, before, after, {f.face_id: int(s) for f, s in zip(faces, seqs, strict=True)}, True
        )

    def list_images(self, collection_id: str) -> Iterator[ImageRecord]:
        self.require_collection(collection_id)
        rows = self.database.connection().execute(
            "SELECT image_id, collection_id, image_sha256, external_image_id, width, height,"
            " face_count, indexed_at, source_path, content FROM images WHERE collection_id = ? ORDER BY indexed_at",
            (collection_id,),
        )
        yield from (ImageRecord(*row) for row in rows)

    def move_to_model(self, collection_id: str, face_model_version: str, templates: dict[str, bytes]) -> None:
        with self.database.write() as db:
            before, after = self._bump_generation(db, collection_id)
            _log_change(db, collection_id, before, after, "replaced", [])
            db.execute(
                "UPDATE collections SET face_model_version = ? WHERE collection_id = ?",
                (face_model_version, collection_id),
            )
            db.executemany(
                "UPDATE faces SET embedding = ? WHERE collection_id = ? AND face_id = ?",
                [(sealed, collection_id, face_id) for face_id, sealed in templates.items()],
            )

    def find_image(self, collection_id: str, image_sha256: str) -> ImageRecord | None:
        row = (
            self.database.connection()
            .execute(
                "SELECT image_id, collection_id, image_sha256, external_image_id, width, height,"
                " face_count, indexed_at, source_path FROM images"
                " WHERE collection_id = ? AND image_sha256 = ? LIMIT 1",
                (collection_id, image_sha256),
            )
            .fetchone()
        )
        return None if row is None else ImageRecord(*row)

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
        sql = f"SELECT seq, {_FACE_COLUMNS} FROM faces WHERE collection_id = ? AND seq > ?"
        params: list[object] = [collection_id, after_seq]
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        if face_ids is not None:
            sql += f" AND face_id IN ({','.join('?' * len(face_ids))})"
            params.extend(face_ids)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        return [(row[0], self._face_record(row[1:])) for row in self.database.connection().execute(sql, params)]

    def faces_by_seq(self, collection_id: str, seqs: Sequence[int]) -> dict[int, FaceRecord]:
        if not seqs:
            return {}
        rows = self.database.connection().execute(
            f"SELECT seq, {_FACE_COLUMNS} FROM faces WHERE collection_id = ? AND seq IN ({','.join('?' * len(seqs))})",
            [collection_id, *seqs],
        )
        return {row[0]: self._face_record(row[1:]) for row in rows}

    def face_crops(self, collection_id: str, face_ids: Sequence[str]) -> dict[str, bytes]:
        db = self.database.connection()
        crops: dict[str, bytes] = {}
        for chunk in self._chunks(list(face_ids)):
            rows = db.execute(
                "SELECT face_crops.face_id, face_crops.crop FROM face_crops JOIN faces USING (face_id)"
                f" WHERE faces.collection_id = ? AND face_crops.face_id IN ({','.join('?' * len(chunk))})",
                [collection_id, *chunk],
            )
            crops.update((face_id, bytes(crop)) for face_id, crop in rows)
        return crops

    def drop_face_crops(self, collection_id: str) -> int:
        with self.database.write() as db:
            return db.execute(
                "DELETE FROM face_crops WHERE face_id IN (SELECT face_id FROM faces WHERE collection_id = ?)",
                (collection_id,),
            ).rowcount

    def get_face(self, collection_id: str, face_id: str) -> tuple[int, FaceRecord]:
        found = self.list_faces(collection_id, face_ids=[face_id], limit=1)
        if not found:
            raise ResourceNotFoundException(f"Face {face_id!r} is not in collection {collection_id!r}.")
        return found[0]

    def load_templates(self, collection_id: str) -> tuple[list[int], list[tuple[str, bytes]], int]:
        with self.database.snapshot() as db:
            generation = self.generation(collection_id)
            if generation is None:
                raise _collection_not_found(collection_id)
            rows = db.execute(
                "SELECT seq, face_id, embedding FROM faces WHERE collection_id = ? ORDER BY seq",
                (collection_id,),
            ).fetchall()
        return [row[0] for row in rows], [(row[1], row[2]) for row in rows], generation

    def delete_faces(self, collection_id: str, face_ids: Sequence[str]) -> FaceChange:
        with self.database.write() as db:
            before, after = self._bump_generation(db, collection_id)
            rows = []
            for chunk in self._chunks(face_ids):
                placeholders = ",".join("?" * len(chunk))
                rows += db.execute(
                    f"SELECT face_id, seq, image_id FROM faces WHERE collection_id = ? AND face_id IN ({placeholders})",
                    [collection_id, *chunk],
                ).fetchall()
                db.execute(
                    f"DELETE FROM faces WHERE collection_id = ? AND face_id IN ({placeholders})",
                    [collection_id, *chunk],
                )
            rows.sort(key=lambda row: row[1])
            self._count_residue(db, len(rows))
            _log_change(db, collection_id, before, after, "removed", [row[1] for row in rows])
            # An image whose last face is gone is forgotten too (with any stored pixels), so that
            # nothing of it remains and a later folder index treats it as new.
            db.executemany(
                "DELETE FROM images WHERE image_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM faces WHERE faces.image_id = images.image_id)",
                [(image_id,) for image_id in {row[2] for row in rows}],
            )
        return FaceChange(collection_id, before, after, {row[0]: int(row[1]) for row in rows}, False)

    def face_ids_where(
        self,
        collection_id: str,
        *,
        created_before: float | None = None,
        external_image_id: str | None = None,
        id_prefix: str | None = None,
        limit: int | None = None,
    ) -> list[str]:
        sql, params = "SELECT face_id FROM faces WHERE collection_id = ?", [collection_id]
        if created_before is not None:
            sql += " AND created_at < ?"
            params.append(created_before)
        if external_image_id is not None:
            sql += " AND external_image_id = ?"
            params.append(external_image_id)
        if id_prefix is not None:
            sql += " AND substr(face_id, 1, ?) = ?"
            params += [len(id_prefix), id_prefix]
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [row[0] for row in self.database.connection().execute(sql, params)]

    def _chunks(self, ids: Sequence[T]) -> list[Sequence[T]]:
        """``ids`` in pieces that fit one statement beside a few other parameters."""
        size = max(1, self.database.max_parameters() - 8)
        return [ids[start : start + size] for start in range(0, len(ids), size)]

    def _count_residue(self, db: Connection, faces: int) -> None:
        """Count ``faces`` erased templates as residue of the key that sealed them, on an engine
        that may keep their ciphertext (see erasure_residue)."""
        if not faces or not self.database.keeps_deleted_rows:
            return
        now = time.time()
        db.execute(
            "INSERT INTO erasure_residue (template_key, faces, first_erased_at, last_erased_at)"
            " SELECT value, ?, ?, ? FROM store_meta WHERE name = 'template_key'"
            " ON CONFLICT (template_key) DO UPDATE SET faces = erasure_residue.faces + excluded.faces,"
            " last_erased_at = excluded.last_erased_at",
            (faces, now, now),
        )

    def erasure_residue(self) -> list[ErasureResidue]:
        rows = self.database.connection().execute(
            "SELECT template_key, faces, first_erased_at, last_erased_at, retired_at FROM erasure_residue"
            " ORDER BY first_erased_at"
        )
        return [ErasureResidue(*row) for row in rows]

    def _bump_generation(self, db: Connection, collection_id: str) -> tuple[int, int]:
        """Give the collection a new generation (the store's next change number); (before, after)."""
        row = db.execute("SELECT generation FROM collections WHERE collection_id = ?", (collection_id,)).fetchone()
        if row is None:
            raise _collection_not_found(collection_id)
        after = _next_change(db)
        db.execute("UPDATE collections SET generation = ? WHERE collection_id = ?", (after, collection_id))
        self.database.notify_change(db, collection_id)
        return int(row[0]), after

    def face_changes_since(self, collection_id: str, generation: int) -> FaceChanges | None:
        with self.database.snapshot() as db:
            current = self.generation(collection_id)
            if current is None:
                return None
            rows = db.execute(
                "SELECT generation, previous, kind, seqs FROM face_changes"
                " WHERE collection_id = ? AND generation > ? ORDER BY generation",
                (collection_id, generation),
            ).fetchall()
            # the log must reach back to ``generation`` unbroken, and hold no wholesale change
            expected = generation
            for row in rows:
                if int(row[1]) != expected or row[2] == "replaced":
                    return None
                expected = int(row[0])
            if expected != current:
                return None
            added, removed = [], set()
            for _, _, kind, seqs in rows:
                numbers = [int(n) for n in seqs.split(",") if n]
                if kind == "added":
                    added += numbers
                else:
                    removed.update(numbers)
            new = set(added)
            # faces added and removed since are in neither the index nor the store
            still_there = [seq for seq in added if seq not in removed]
            templates = []
            for chunk in self._chunks(still_there):
                templates += db.execute(
                    f"SELECT seq, face_id, embedding FROM faces WHERE collection_id = ?"
                    f" AND seq IN ({','.join('?' * len(chunk))}) ORDER BY seq",
                    [collection_id, *chunk],
                ).fetchall()
        return FaceChanges(
            current,
            [int(row[0]) for row in templates],
            [(row[1], row[2]) for row in templates],
            sorted(removed - new),
        )

    # -- users -----------------------------------------------------------------------------

    def create_user(self, collection_id: str, user_id: str, created_at: float) -> None:
        with self.database.write() as db:
            _require_collection(db, collection_id)
            created = db.execute(
                "INSERT INTO users (collection_id, user_id, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (collection_id, user_id) DO NOTHING",
                (collection_id, user_id, created_at),
            )
            if created.rowcount == 0:
                raise ConflictException(f"User {user_id!r} already exists in collection {collection_id!r}.")

    def delete_user(self, collection_id: str, user_id: str) -> None:
        """Delete a user; its faces stay in the collection, no longer associated."""
        with self.database.write() as db:
            _require_collection(db, collection_id)
            db.execute(
                "UPDATE faces SET user_id = NULL WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            )
            deleted = db.execute("DELETE FROM users WHERE collection_id = ? AND user_id = ?", (collection_id, user_id))
            if deleted.rowcount == 0:
                raise _user_not_found(collection_id, user_id)

    def get_user(self, collection_id: str, user_id: str) -> UserRecord:
        row = (
            self.database.connection()
            .execute(
                "SELECT collection_id, user_id, created_at,"
                " (SELECT COUNT(*) FROM faces f WHERE f.collection_id = u.collection_id AND f.user_id = u.user_id)"
                " FROM users u WHERE collection_id = ? AND user_id = ?",
                (collection_id, user_id),
            )
            .fetchone()
        )
        if row is None:
            raise _user_not_found(collection_id, user_id)
        return UserRecord(*row)

    def list_users(self, collection_id: str, after: str | None, limit: int) -> list[UserRecord]:
        rows = self.database.connection().execute(
            "SELECT collection_id, user_id, created_at,"
            " (SELECT COUNT(*) FROM faces f WHERE f.collection_id = u.collection_id AND f.user_id = u.user_id)"
            " FROM users u WHERE collection_id = ? AND user_id > ? ORDER BY user_id LIMIT ?",
            (collection_id, after or "", limit),
        )
        return [UserRecord(*row) for row in rows]

    def set_face_users(self, collection_id: str, face_ids: Sequence[str], user_id: str | None) -> None:
        """Associate faces with ``user_id`` (or clear their association when None)."""
        with self.database.write() as db:
            _require_collection(db, collection_id)
            db.executemany(
                "UPDATE faces SET user_id = ? WHERE collection_id = ? AND face_id = ?",
                [(user_id, collection_id, face_id) for face_id in face_ids],
            )

    @staticmethod
    def _face_row(face: FaceRecord) -> tuple[object, ...]:
        return (
            face.face_id,
            face.collection_id,
            face.image_id,
            face.external_image_id,
            face.image_sha256,
            json.dumps(face.bounding_box),
            face.confidence,
            json.dumps(face.landmarks),
            json.dumps(face.quality),
            face.template,
            face.created_at,
            face.user_id,
        )

    @staticmethod
    def _face_record(row: Sequence[object]) -> FaceRecord:
        (
            face_id,
            collection_id,
            image_id,
            external_image_id,
            sha,
            box,
            confidence,
            landmarks,
            quality,
            embedding,
            created_at,
            user_id,
        ) = row
        return FaceRecord(
            face_id=str(face_id),
            collection_id=str(collection_id),
            image_id=str(image_id),
            external_image_id=external_image_id,  # type: ignore[arg-type]
            image_sha256=str(sha),
            bounding_box=json.loads(str(box)),
            confidence=float(confidence),  # type: ignore[arg-type]
            landmarks={name: tuple(point) for name, point in json.loads(str(landmarks)).items()},
            quality=json.loads(str(quality)),
            template=bytes(embedding),  # type: ignore[arg-type]
            created_at=float(created_at),  # type: ignore[arg-type]
            user_id=user_id,  # type: ignore[arg-type]
        )


def _put_tags(db: Connection, collection_id: str, tags: dict[str, str]) -> None:
    db.executemany(
        "INSERT INTO collection_tags (collection_id, tag_key, tag_value) VALUES (?, ?, ?)"
        " ON CONFLICT (collection_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
        [(collection_id, key, value) for key, value in tags.items()],
    )


def _require_collection(db: Connection, collection_id: str) -> None:
    found = db.execute("SELECT 1 FROM collections WHERE collection_id = ?", (collection_id,)).fetchone()
    if found is None:
        raise _collection_not_found(collection_id)


def _collection_not_found(collection_id: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"Collection {collection_id!r} does not exist.")


def _user_not_found(collection_id: str, user_id: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"User {user_id!r} does not exist in collection {collection_id!r}.")


def _next_change(db: Connection) -> int:
    """The store's next change number (writers are serialised, so numbers follow commit order)."""
    return int(
        db.execute("UPDATE change_counter SET last_change = last_change + 1 RETURNING last_change").fetchone()[0]
    )


def _reseal_crops(db: Connection, table: str, key: str, reseal: Reseal) -> None:
    """Reseal every crop of ``table`` (keyed by ``key``), a batch at a time: crops are several
    times the size of templates, too many to hold at once."""
    after = ""
    while True:
        rows = db.execute(
            f"SELECT {key}, crop FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?", (after, _RESEAL_BATCH)
        ).fetchall()
        if not rows:
            return
        db.executemany(f"UPDATE {table} SET crop = ? WHERE {key} = ?", [(reseal(k, bytes(c)), k) for k, c in rows])
        after = rows[-1][0]


def _log_change(db: Connection, collection_id: str, before: int, after: int, kind: str, seqs: Sequence[int]) -> None:
    """Record a change of the collection's faces for other nodes (face_changes_since), and forget
    this collection's changes older than the store's last ``CHANGE_LOG_KEPT``."""
    db.execute(
        "INSERT INTO face_changes (collection_id, generation, previous, kind, seqs) VALUES (?, ?, ?, ?, ?)",
        (collection_id, after, before, kind, ",".join(str(int(seq)) for seq in seqs)),
    )
    db.execute(
        "DELETE FROM face_changes WHERE collection_id = ? AND generation <= ?",
        (collection_id, after - CHANGE_LOG_KEPT),
    )
