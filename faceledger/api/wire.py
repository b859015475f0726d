"""The AWS JSON 1.1 wire format of Rekognition, checked against botocore's own service model.

botocore ships Rekognition's service model (``rekognition/2016-06-27/service-2.json``); it is the
source of truth for operation names, member names and types, required members, min/max and
enums, so requests are validated exactly as the real service defines them. Requests become
keyword arguments of :class:`~faceledger.service.FaceService` methods; responses become JSON.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import botocore.session
from botocore.model import OperationModel, Shape

from faceledger.errors import (
    FaceledgerError,
    ImageTooLargeException,
    InvalidParameterException,
)
from faceledger.service.objects import S3Object
from faceledger.service.operations import OPERATIONS, Door, offered_at

CONTENT_TYPE = "application/x-amz-json-1.1"

_IMAGE_BYTES_LIMIT_MEMBER = "ImageBlob"


class SerializationException(FaceledgerError):
    """The body is not a JSON object (or nests deeper than the decoder's recursion limit)."""

    code = "SerializationException"


class UnknownOperationException(FaceledgerError):
    """The X-Amz-Target names no operation faceledger serves."""

    code = "UnknownOperationException"


@cache
def service_model() -> Any:
    return botocore.session.get_session().get_service_model("rekognition")


TARGET_PREFIX = Door.REKOGNITION.value + "."
EXTENSION_PREFIX = Door.FACELEDGER.value + "."


@dataclass(frozen=True)
class ExtensionOperation:
    name: str
    input_shape: None = None


def operation_for(target: str | None) -> OperationModel | ExtensionOperation:
    """The operation an ``X-Amz-Target`` header names (Rekognition's face API, or faceledger's
    own accountability operations under ``FaceledgerService.``)."""
    if target and target.startswith(EXTENSION_PREFIX):
        name = target[len(EXTENSION_PREFIX) :]
        if name not in offered_at(Door.FACELEDGER):
            raise UnknownOperationException(f"{name} is not a faceledger operation.")
        return ExtensionOperation(name)
    if not target or not target.startswith(TARGET_PREFIX):
        raise UnknownOperationException(
            f"X-Amz-Target must be {TARGET_PREFIX}<Operation> for the Rekognition face API."
        )
    name = target[len(TARGET_PREFIX) :]
    if name not in offered_at(Door.REKOGNITION):
        known = name in service_model().operation_names
        raise UnknownOperationException(
            f"{name} is not supported: faceledger serves the Rekognition face API only"
            + (" (collections, faces, users, tags)." if known else f"; {name} is not a Rekognition operation.")
        )
    return service_model().operation_model(name)


def method_name(operation: OperationModel | ExtensionOperation) -> str:
    return OPERATIONS[operation.name].method


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise SerializationException("The request body is not valid JSON.") from None
    except RecursionError:  # the decoder recurses once per level; no request nests this deep
        raise SerializationException("The request body is nested too deeply to be a request.") from None
    if not isinstance(document, dict):
        raise SerializationException("The request body must be a JSON object.")
    _refuse_what_no_text_keeps(document)
    return document


def _refuse_what_no_text_keeps(value: Any) -> None:
    """A NUL character (PostgreSQL's text refuses it) or a lone surrogate (no UTF-8 encodes it)
    in any string of the request is refused here, by name, not met by the store as a 500."""
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_what_no_text_keeps(key)
            _refuse_what_no_text_keeps(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_what_no_text_keeps(item)
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidParameterException("A string of the request holds a lone surrogate: it is not text.") from None
        if "\x00" in value:
            raise InvalidParameterException("A string of the request holds a NUL character, which no text field takes.")


def request_arguments(
    operation: OperationModel | ExtensionOperation, document: dict[str, Any], method: Any
) -> dict[str, Any]:
    """Validate ``document`` against the operation's input shape and turn it into keyword
    arguments of ``method``. Image structures become their decoded bytes."""
    shape = operation.input_shape
    values = _check(shape, document, "") if shape is not None else document
    accepted = inspect.signature(method).parameters
    arguments: dict[str, Any] = {}
    for member, value in values.items():
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", member).lower()
        if name not in accepted or accepted[name].kind is not inspect.Parameter.KEYWORD_ONLY:
            raise InvalidParameterException(f"{member} is not supported by faceledger's {operation.name}.")
        if shape is not None and shape.members[member].name == "Image":
            value = _image_bytes(member, value)
        elif shape is not None and shape.members[member].name == "Video":
            value = _video_object(member, value)
        elif shape is None and member == "Image":  # an extension's image: Rekognition's Image shape
            value = _image_bytes(member, _check(service_model().shape_for("Image"), value, member))
        arguments[name] = value
    return arguments


def _image_bytes(member: str, image: dict[str, Any]) -> bytes | S3Object:
    """The image's bytes, or the S3 object the service reads them from (service/objects.py)."""
    if ("Bytes" in image) == ("S3Object" in image):
        raise InvalidParameterException(f"{member} takes either Bytes or S3Object (one of the two).")
    if "S3Object" in image:
        return _s3_object(member, image["S3Object"])
    return image["Bytes"]


def _video_object(member: str, video: dict[str, Any]) -> S3Object:
    """A stored video: always an S3 object of the configured store (service/objects.py)."""
    return _s3_object(member, video.get("S3Object") or {})


def _s3_object(member: str, named: dict[str, Any]) -> S3Object:
    if "Bucket" not in named or "Name" not in named:
        raise InvalidParameterException(f"{member}.S3Object needs a Bucket and a Name.")
    return S3Object(named["Bucket"], named["Name"], named.get("Version"))


def _check(shape: Shape, value: Any, path: str) -> Any:
    """The value, validated against ``shape`` (blobs base64-decoded). ``path`` names it in errors."""
    where = path or "request"
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise InvalidParameterException(f"{where} must be an object.")
        missing = [name for name in shape.required_members if name not in value]
        if missing:
            raise InvalidParameterException(f"{where} is missing required member(s): {', '.join(missing)}.")
        return {
            name: _check(shape.members[name], member, f"{path}.{name}" if path else name)
            for name, member in value.items()
            if name in shape.members  # unknown members are ignored, as AWS does
        }
    if kind == "list":
        if not isinstance(value, list):
            raise InvalidParameterException(f"{where} must be a list.")
        _length(shape, len(value), where, "items")
        return [_check(shape.member, item, f"{where}[{n}]") for n, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise InvalidParameterException(f"{where} must be a map.")
        _length(shape, len(value), where, "entries")
        return {
            _check(shape.key, key, f"{where} key"): _check(shape.value, item, f"{where}[{key}]")
            for key, item in value.items()
        }
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidParameterException(f"{where} must be a string.")
        _length(shape, len(value), where, "characters")
        if shape.enum and value not in shape.enum:
            raise InvalidParameterException(f"{where} must be one of {', '.join(shape.enum)}.")
        return value
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParameterException(f"{where} must be a whole number.")
        _range(shape, value, where)
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise InvalidParameterException(f"{where} must be a number.")
        _range(shape, value, where)
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidParameterException(f"{where} must be true or false.")
        return value
    if kind == "blob":
        if not isinstance(value, str):
            raise InvalidParameterException(f"{where} must be base64 text.")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParameterException(f"{where} is not valid base64.") from None
        maximum = shape.metadata.get("max")
        if maximum is not None and len(data) > maximum:
            error = ImageTooLargeException if shape.name == _IMAGE_BYTES_LIMIT_MEMBER else InvalidParameterException
            raise error(f"{where} is {len(data):,} bytes; the limit is {maximum:,}.")
        if len(data) < shape.metadata.get("min", 0):
            raise InvalidParameterException(f"{where} must not be empty.")
        return data
    raise InvalidParameterException(f"{where} has a type faceledger does not accept ({kind}).")


def _length(shape: Shape, length: int, where: str, unit: str) -> None:
    minimum, maximum = shape.metadata.get("min"), shape.metadata.get("max")
    if minimum is not None and length < minimum:
        raise InvalidParameterException(f"{where} must have at least {minimum} {unit}.")
    if maximum is not None and length > maximum:
        raise InvalidParameterException(f"{where} must have at most {maximum} {unit}.")


def _range(shape: Shape, number: float, where: str) -> None:
    minimum, maximum = shape.metadata.get("min"), shape.metadata.get("max")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        low = "" if minimum is None else f"at least {minimum}"
        high = "" if maximum is None else f"at most {maximum}"
        raise InvalidParameterException(f"{where} must be {' and '.join(p for p in (low, high) if p)}.")


def response_body(response: dict[str, Any]) -> bytes:
    """JSON 1.1 body of a service response (timestamps as epoch seconds, as the protocol wants)."""
    return json.dumps(response, default=_json_value, separators=(",", ":")).encode()


def error_body(error: FaceledgerError) -> bytes:
    return json.dumps({"__type": error.code, "message": error.message}).encode()


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
