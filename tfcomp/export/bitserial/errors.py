"""Errors raised when a bit-serial descriptor or its blob cannot be trusted.

Example:
    >>> try:
    ...     validate_descriptor("missing.json")
    ... except DescriptorError as e:
    ...     print(type(e).__name__)
    DescriptorError
"""

from tfcomp._io import BadInputError

__all__ = ["BlobIntegrityError", "DescriptorError", "SchemaVersionError"]


class DescriptorError(BadInputError):
    """The descriptor is unreadable, malformed or inconsistent.

    Example:
        >>> issubclass(DescriptorError, ValueError)
        True
    """


class SchemaVersionError(DescriptorError):
    """The descriptor uses a schema version this tfcomp cannot read.

    Example:
        >>> issubclass(SchemaVersionError, DescriptorError)
        True
    """


class BlobIntegrityError(DescriptorError):
    """The weight blob is missing, truncated or does not match its sha256.

    Example:
        >>> issubclass(BlobIntegrityError, DescriptorError)
        True
    """
