"""Following faces from one sampled frame to the next, so that one person keeps one index while
visible (GetFaceSearch's ``Person.Index``) and is searched once or a few times, not in every frame.

A face continues the track whose last box it overlaps most (intersection over union at least
``min_overlap``), each track taking at most one face a frame, greedily by overlap; a track not
seen for ``max_gap_ms`` ends. Boxes only: two people who cross can swap tracks, which the
documentation says; at five frames a second faces move little between frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from faceledger.vision.face import BoundingBox, Face


@dataclass
class Track:
    index: int
    box: BoundingBox
    last_seen_ms: int
    searched_ms: int | None = None  # when its face was last searched (face search)
    matches: list = field(default_factory=list)  # the latest search's matches


class FaceTracker:
    def __init__(self, min_overlap: float = 0.3, max_gap_ms: int = 1000) -> None:
        self._min_overlap = min_overlap
        self._max_gap_ms = max_gap_ms
        self._active: list[Track] = []
        self._count = 0

    @property
    def people(self) -> int:
        """How many tracks (people, as far as boxes tell) there have been."""
        return self._count

    def update(self, timestamp_ms: int, faces: list[Face]) -> list[tuple[Track, Face]]:
        """Each face of the frame at ``timestamp_ms`` with the track it continues or starts."""
        self._active = [t for t in self._active if timestamp_ms - t.last_seen_ms <= self._max_gap_ms]
        pairs = sorted(
            (
                (track.box.overlap(face.box), t, f)
                for t, track in enumerate(self._active)
                for f, face in enumerate(faces)
            ),
            key=lambda pair: pair[0],
            reverse=True,
        )
        assigned: dict[int, Track] = {}
        taken: set[int] = set()
        for score, t, f in pairs:
            if score < self._min_overlap:
                break
            if t in taken or f in assigned:
                continue
            taken.add(t)
            assigned[f] = self._active[t]
        result = []
        for f, face in enumerate(faces):
            track = assigned.get(f)
            if track is None:
                track = Track(self._count, face.box, timestamp_ms)
                self._count += 1
                self._active.append(track)
            track.box, track.last_seen_ms = face.box, timestamp_ms
            result.append((track, face))
        return result
