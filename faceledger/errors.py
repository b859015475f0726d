"""The one exception hierarchy of faceledger.

Every error the service raises is a :class:`FaceledgerError`. Its subclasses here are named after
the error names of Amazon Rekognition's face API, so that the wire layer maps them 1:1 to AWS
error envelopes and the CLI maps them to a message and an exit code. Catch ``FaceledgerError`` for
"anything faceledger refused", or a subclass for one kind of refusal.

Errors only the HTTP API meets (a bad signature, a body that is not JSON, an unknown operation)
are subclasses too, defined beside the code that raises them in ``faceledger.api``.

The CLI exits with the error's ``exit_code``; its other exit codes are its own (``audit verify``
exits 8 on a tampered ledger, ``index`` 130 when interrupted).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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

    def about(self, subject: str) -> FaceledgerError:
        """The same error, its message prefixed with what it is about (an image member, a file)."""
        error = type(self)(f"{subject}: {self.message}")
        error.__cause__ = self.__cause__
        return error


@contextmanager
def about(subject: str) -> Iterator[None]:
    """Errors raised inside say they are about ``subject`` (e.g. ``SourceImage`` or a file name)."""
    try:
        yield
    except FaceledgerError as error:
        raise error.about(subject) from None


class InvalidParameterException(FaceledgerError):
    """A parameter is missing, out of range or malformed; also "no face in the image"."""

    code = "InvalidParameterException"
    exit_code = 2


class NoUsableFaceException(InvalidParameterException):
    """The image holds no face, or none that passes the quality filter (Rekognition answers
    InvalidParameterException)."""


class InvalidImageFormatException(FaceledgerError):
    """The bytes are not an image in a supported format, or are corrupt; in the CLI, also an
    image file that does not exist or cannot be read."""

    code = "InvalidImageFormatException"
    exit_code = 3


class ImageTooLargeException(FaceledgerError):
    """The image is over the byte-size or pixel-count limit, or an HTTP request body over its
    byte limit (refused before decoding)."""

    code = "ImageTooLargeException"
    exit_code = 3


class InvalidS3ObjectException(FaceledgerError):
    """An S3 object named as an image or video cannot be read: it does not exist (or not in that
    version), its bucket is not one faceledger may read, or faceledger's credentials may not."""

    code = "InvalidS3ObjectException"
    exit_code = 3


class VideoTooLargeException(FaceledgerError):
    """A video over the byte-size limit (refused when its job is asked for, before a byte of it
    is read)."""

    code = "VideoTooLargeException"
    exit_code = 3


class ResourceNotFoundException(FaceledgerError):
    """The collection, face, user, consent record, review case or access key does not exist."""

    code = "ResourceNotFoundException"
    exit_code = 4


class ResourceAlreadyExistsException(FaceledgerError):
    """A collection with that id already exists (a user that exists is a ConflictException,
    as in Rekognition's CreateUser)."""

    code = "ResourceAlreadyExistsException"
    exit_code = 5


class ConflictException(FaceledgerError):
    """The request conflicts with the resource's state: a user with that id already exists in
    the collection. (A face associated with another user is not an error: AssociateFaces
    reports it among UnsuccessfulFaceAssociations.)"""

    code = "ConflictException"
    http_status = 409
    exit_code = 5


class InternalServerError(FaceledgerError):
    """faceledger failed on its own side; nothing was written."""

    code = "InternalServerError"
    http_status = 500
    exit_code = 70


class ServiceUnavailableException(FaceledgerError):
    """The database cannot be reached just now (a PostgreSQL server restarting, a network cut):
    nothing was written; SDKs retry a 503 by themselves, and the store reconnects on its own."""

    code = "ServiceUnavailableException"
    http_status = 503
    exit_code = 69


class DataDirectoryError(FaceledgerError):
    """The data directory (or its database) cannot be used: not a directory, not writable, or a
    database that cannot be opened for writing. Only met when a service opens."""

    code = "DataDirectoryError"
    http_status = 500
    exit_code = 78  # EX_CONFIG


class InvalidPaginationTokenException(FaceledgerError):
    """The NextToken was not issued by this server for this listing."""

    code = "InvalidPaginationTokenException"
    exit_code = 2


class ServiceQuotaExceededException(FaceledgerError):
    """A limit on the number of something would be exceeded: the tags of a collection."""

    code = "ServiceQuotaExceededException"
    exit_code = 6


class IdempotentParameterMismatchException(FaceledgerError):
    """A ClientRequestToken was reused with different parameters."""

    code = "IdempotentParameterMismatchException"
    exit_code = 2


class AccessDeniedException(FaceledgerError):
    """The caller may not do this: the access key's role or collections do not cover it, the
    collection's policy demands what is missing (a declared purpose and case for a search, a
    consent record for indexing), or a searcher tries to review their own search."""

    code = "AccessDeniedException"
    exit_code = 7


class ThrottlingException(FaceledgerError):
    """Too many HTTP API requests are waiting; retry with backoff (SDKs do so by themselves)."""

    code = "ThrottlingException"
    exit_code = 75
