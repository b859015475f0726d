"""The SQL repository of stored-video jobs (store/interface.py VideoJobRepository)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from faceledger.store.interface import VideoJobRepository
from faceledger.store.records import VideoJob, VideoJobResult
from faceledger.store.sql.database import Database

_COLUMNS = ", ".join(f.name for f in fields(VideoJob))
_JSON = {"request", "collections", "video_metadata"}


class SQLVideoJobs(VideoJobRepository):
    def __init__(self, database: Database) -> None:
        self._db = database

    def create(self, job: VideoJob) -> None:
        with self._db.write() as db:
            db.execute(
                f"INSERT INTO video_jobs ({_COLUMNS}) VALUES ({', '.join('?' * len(fields(VideoJob)))})",
                _row(job),
            )

    def get(self, job_id: str) -> VideoJob | None:
        row = self._db.connection().execute(f"SELECT {_COLUMNS} FROM video_jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def claim(
        self, worker: str, now: float, lease_seconds: float, max_attempts: int, job_id: str | None = None
    ) -> VideoJob | None:
        # a job asked for by id may be one this worker holds already (started for it to run)
        which, params = ("OR claimed_by = ?) AND job_id = ? ", [worker, job_id]) if job_id is not None else (") ", [])
        waiting = (
            "SELECT job_id FROM video_jobs WHERE status = 'IN_PROGRESS' AND attempts < ?"
            f" AND (claimed_by IS NULL OR lease_expires_at < ? {which}ORDER BY created_at LIMIT 1"
        )
        # looked for outside a write first: an idle worker polls every second, and a write
        # transaction each time would queue the requests' writes behind it for nothing
        if self._db.connection().execute(waiting, (max_attempts, now, *params)).fetchone() is None:
            return None
        with self._db.write() as db:
            row = db.execute(waiting, (max_attempts, now, *params)).fetchone()  # again, under the write lock
            if row is None:
                return None
            db.execute(
                "UPDATE video_jobs SET claimed_by = ?, lease_expires_at = ?, attempts = attempts + 1 WHERE job_id = ?",
                (worker, now + lease_seconds, row[0]),
            )
            claimed = db.execute(f"SELECT {_COLUMNS} FROM video_jobs WHERE job_id = ?", (row[0],)).fetchone()
        return _job(claimed)

    def abandoned(self, now: float, max_attempts: int) -> list[VideoJob]:
        rows = self._db.connection().execute(
            f"SELECT {_COLUMNS} FROM video_jobs WHERE status = 'IN_PROGRESS' AND attempts >= ?"
            " AND lease_expires_at < ?",
            (max_attempts, now),
        )
        return [_job(row) for row in rows]

    def renew(self, job_id: str, worker: str, until: float) -> bool:
        with self._db.write() as db:
            return (
                db.execute(
                    "UPDATE video_jobs SET lease_expires_at = ? WHERE job_id = ? AND claimed_by = ?"
                    " AND status = 'IN_PROGRESS'",
                    (until, job_id, worker),
                ).rowcount
                == 1
            )

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
        with self._db.write() as db:
            sql = (
                "UPDATE video_jobs SET status = ?, status_message = ?, video_metadata = ?, finished_at = ?,"
                " claimed_by = NULL, lease_expires_at = NULL WHERE job_id = ? AND status = 'IN_PROGRESS'"
            )
            params: list[Any] = [status, message, json.dumps(metadata) if metadata else None, at, job_id]
            if worker is not None:
                sql += " AND claimed_by = ?"
                params.append(worker)
            if db.execute(sql, params).rowcount != 1:
                return False
            db.executemany(
                "INSERT INTO video_job_results (job_id, position, timestamp_ms, person, result) VALUES (?, ?, ?, ?, ?)",
                [
                    (job_id, position, r.timestamp_ms, r.person, json.dumps(r.result, separators=(",", ":")))
                    for position, r in enumerate(results)
                ],
            )
            return True

    def results(self, job_id: str, by_person: bool, offset: int, limit: int) -> list[VideoJobResult]:
        # positions follow the timestamps (results are written in frame order): the primary key's order
        order = "person, timestamp_ms, position" if by_person else "position"
        rows = self._db.connection().execute(
            f"SELECT timestamp_ms, person, result FROM video_job_results WHERE job_id = ? ORDER BY {order}"
            " LIMIT ? OFFSET ?",
            (job_id, limit, offset),
        )
        return [VideoJobResult(int(ts), person, json.loads(result)) for ts, person, result in rows]

    def forget_finished(self, before: float) -> int:
        with self._db.write() as db:
            return db.execute(
                "DELETE FROM video_jobs WHERE status <> 'IN_PROGRESS' AND finished_at < ?", (before,)
            ).rowcount


def _row(job: VideoJob) -> tuple[Any, ...]:
    values = []
    for f in fields(VideoJob):
        value = getattr(job, f.name)
        if f.name in _JSON and value is not None:
            value = json.dumps(list(value) if f.name == "collections" else value)
        values.append(value)
    return tuple(values)


def _job(row: Sequence[Any]) -> VideoJob:
    values = dict(zip((f.name for f in fields(VideoJob)), row, strict=True))
    for name in _JSON:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    if values["collections"] is not None:
        values["collections"] = tuple(values["collections"])
    return VideoJob(**values)
