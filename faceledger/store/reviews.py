"""Review cases: the candidates a search returned in a review_required collection, and each
reviewer's decision on each candidate."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from faceledger.store.database import Database


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
        return "VERIFIED" if len(confirmers) >= 2 else "UNVERIFIED"


@dataclass
class ReviewCase:
    case_id: str
    collection_id: str
    operation: str
    opened_by: str
    opened_at: float
    purpose: str | None
    case_ref: str | None
    probe: str
    candidates: list[Candidate]

    @property
    def status(self) -> str:
        if any(c.status == "UNVERIFIED" for c in self.candidates):
            return "OPEN"
        return "CLOSED"


_CASE_COLUMNS = "case_id, collection_id, operation, opened_by, opened_at, purpose, case_ref, probe"


class ReviewStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    def open_case(self, collection_id: str, operation: str, opened_by: str, purpose: str | None,
                  case_ref: str | None, probe: str, candidates: list[tuple[str, float]]) -> str:
        case_id = str(uuid.uuid4())
        with self._db.write() as db:
            db.execute(f"INSERT INTO review_cases ({_CASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (case_id, collection_id, operation, opened_by, time.time(), purpose, case_ref, probe))
            db.executemany("INSERT INTO review_candidates (case_id, face_id, similarity) VALUES (?, ?, ?)",
                           [(case_id, face_id, similarity) for face_id, similarity in candidates])
        return case_id

    def case(self, case_id: str) -> ReviewCase | None:
        db = self._db.connection()
        row = db.execute(f"SELECT {_CASE_COLUMNS} FROM review_cases WHERE case_id = ?", (case_id,)).fetchone()
        if row is None:
            return None
        candidates = {face_id: Candidate(face_id, similarity) for face_id, similarity in db.execute(
            "SELECT face_id, similarity FROM review_candidates WHERE case_id = ? ORDER BY similarity DESC", (case_id,))}
        for face_id, reviewer, decision, note, decided_at in db.execute(
            "SELECT face_id, reviewer, decision, note, decided_at FROM review_decisions WHERE case_id = ?"
            " ORDER BY decided_at", (case_id,)
        ):
            candidates[face_id].decisions.append(
                {"reviewer": reviewer, "decision": decision, "note": note, "decided_at": decided_at})
        return ReviewCase(*row, candidates=list(candidates.values()))

    def case_ids(self, collection_id: str | None = None) -> list[str]:
        sql, params = "SELECT case_id FROM review_cases", []
        if collection_id is not None:
            sql += " WHERE collection_id = ?"
            params.append(collection_id)
        return [row[0] for row in self._db.connection().execute(sql + " ORDER BY opened_at", params)]

    def decide(self, case_id: str, face_id: str, reviewer: str, decision: str, note: str) -> None:
        """Record (or replace) this reviewer's decision on this candidate."""
        with self._db.write() as db:
            db.execute(
                "INSERT INTO review_decisions (case_id, face_id, reviewer, decision, note, decided_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (case_id, face_id, reviewer) DO UPDATE SET"
                " decision = excluded.decision, note = excluded.note, decided_at = excluded.decided_at",
                (case_id, face_id, reviewer, decision, note, time.time()),
            )
