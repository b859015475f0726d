"""Build response members in exactly the shapes of Rekognition's face API.

The service's results (results.py) are shaped with these into plain dicts with Rekognition's
member names, so a Python caller reads the same structure boto3 returns, and the HTTP layer
serialises them unchanged.
"""

from __future__ import annotations

from typing import Any

from faceledger.store.records import FaceRecord
from faceledger.vision.face import Face

Response = dict[str, Any]


def relative_landmarks(face: Face, width: int, height: int) -> dict[str, tuple[float, float]]:
    if face.landmarks is None:
        return {}
    return {name: (x / width, y / height) for name, (x, y) in face.landmarks.named().items()}


def quality_record(face: Face) -> dict[str, Any]:
    """What the store keeps about a face's quality (see vision/quality.py for units)."""
    if face.quality is None:
        return {}
    pose = face.quality.pose
    return {
        "Brightness": face.quality.brightness,
        "Sharpness": face.quality.sharpness,
        "FaceSize": face.quality.face_size,
        "Pose": {"Roll": pose.roll, "Yaw": pose.yaw, "Pitch": pose.pitch},
    }


def face_detail(face: Face, width: int, height: int) -> dict[str, Any]:
    """A FaceDetail (DetectFaces, IndexFaces) / ComparedFace. No gender, age or emotion: by design."""
    detail: dict[str, Any] = {
        "BoundingBox": face.box.relative(width, height),
        "Confidence": face.confidence,
        "Landmarks": [
            {"Type": name, "X": x, "Y": y} for name, (x, y) in relative_landmarks(face, width, height).items()
        ],
    }
    quality = quality_record(face)
    if quality:
        detail["Pose"] = quality["Pose"]
        detail["Quality"] = {"Brightness": quality["Brightness"], "Sharpness": quality["Sharpness"]}
    return detail


def searched_face(face: Face, width: int, height: int) -> dict[str, Any]:
    return {"BoundingBox": face.box.relative(width, height), "Confidence": face.confidence}


def stored_face(record: FaceRecord, model_version: str) -> dict[str, Any]:
    """A Face member (IndexFaces, ListFaces, SearchFaces matches)."""
    shape: dict[str, Any] = {
        "FaceId": record.face_id,
        "BoundingBox": record.bounding_box,
        "ImageId": record.image_id,
        "Confidence": record.confidence,
        "IndexFacesModelVersion": model_version,
    }
    if record.external_image_id is not None:
        shape["ExternalImageId"] = record.external_image_id
    if record.user_id is not None:
        shape["UserId"] = record.user_id
    return shape
