"""Errors of the crypto layer; the service layer maps them to AWS errors."""


class CryptoError(Exception):
    """Base of every crypto failure."""


class InvalidBlobError(CryptoError):
    """The bytes are not a ciphertext blob of a format kmsweb writes."""


class DecryptionError(CryptoError):
    """Authentication failed: wrong key, wrong context, or altered bytes."""
