"""The one exception hierarchy of faceledger.

Every error the service raises is a :class:`FaceledgerError`. Its subclasses are named after the
error names of Amazon Rekognition's face API, so that the wire layer maps them 1:1 to AWS error
envelopes and the CLI maps them to a message and an exit code. Catch ``FaceledgerError`` for
"anything faceledger refused", or a subclass for one kind of refusal.
"""

from __future__ import annotations


class FaceledgerError(Exception):
    """Base class: a request faceledger refused or could not carry out.

    ``code`` is the Rekognition error name, ``http_status`` the status the HTTP API answers with,
    ``exit_code`` the CLI's exit status. ``message`` never contains secrets or image bytes.
    """

    code = "FaceledgerError"
    http_status = 400
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameterException(FaceledgerError):
    """A parameter is missing, out of range or malformed; also "no face in the image"."""

    code = "InvalidParameterException"
    exit_code = 2


class InvalidImageFormatException(FaceledgerError):
    """The bytes are not an image in a supported format, or are corrupt."""

    code = "InvalidImageFormatException"
    exit_code = 3


class ImageTooLargeException(FaceledgerError):
    """The image is over the byte-size or pixel-count limit (refused before decoding)."""

    code = "ImageTooLargeException"
    exit_code = 3


class ResourceNotFoundException(FaceledgerError):
    """The collection, face or user does not exist."""

    code = "ResourceNotFoundException"
    exit_code = 4


class ResourceAlreadyExistsException(FaceledgerError):
    """A collection or user with that id already exists."""

    code = "ResourceAlreadyExistsException"
    exit_code = 5


class ConflictException(FaceledgerError):
    """The request conflicts with the resource's state (e.g. a face owned by another user)."""

    code = "ConflictException"
    http_status = 409
    exit_code = 5


class InternalServerError(FaceledgerError):
    """faceledger failed on its own side; nothing was written."""

    code = "InternalServerError"
    http_status = 500
    exit_code = 70


class InvalidPaginationTokenException(FaceledgerError):
    """The NextToken was not issued by this server for this listing."""

    code = "InvalidPaginationTokenException"
    exit_code = 2


class ServiceQuotaExceededException(FaceledgerError):
    """A limit on the number of something (tags, faces per user) would be exceeded."""

    code = "ServiceQuotaExceededException"
    exit_code = 6


class IdempotentParameterMismatchException(FaceledgerError):
    """A ClientRequestToken was reused with different parameters."""

    code = "IdempotentParameterMismatchException"
    exit_code = 2


class AccessDeniedException(FaceledgerError):
    """The caller's access key may not perform this operation on this resource."""

    code = "AccessDeniedException"
    exit_code = 7


class ThrottlingException(FaceledgerError):
    """Too many requests are waiting; retry with backoff (SDKs do so by themselves)."""

    code = "ThrottlingException"
    exit_code = 75
