"""kmsweb's cryptography, free of Django.

Everything that touches key material in the clear lives in this package:
root-key providers, wrapping of key material, the ciphertext blob format and
the symmetric algorithm. Callers pass bytes in and get bytes out; nothing
here reads settings, the database or the clock.
"""

from keys.crypto.errors import CryptoError, DecryptionError, InvalidBlobError
from keys.crypto.rootkey import LocalRootKey, RootKeyProvider, RootKeyring, generate_root_key, new_root_key_line
from keys.crypto.symmetric import (
    BlobHeader,
    decrypt,
    encrypt,
    generate_material,
    parse_header,
    random_bytes,
)

__all__ = [
    "BlobHeader",
    "CryptoError",
    "DecryptionError",
    "InvalidBlobError",
    "LocalRootKey",
    "RootKeyProvider",
    "RootKeyring",
    "decrypt",
    "encrypt",
    "generate_material",
    "generate_root_key",
    "new_root_key_line",
    "parse_header",
    "random_bytes",
]
