"""keys.crypto: the blob format, context binding and root-key wrapping.

Pure tests (no database): the crypto package imports nothing from Django, so
these run in milliseconds and are property-based where a property exists.
"""

from __future__ import annotations

import base64
import os
import stat
import struct
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from keys.crypto import (
    CryptoError,
    DecryptionError,
    InvalidBlobError,
    LocalRootKey,
    decrypt,
    encrypt,
    generate_material,
    generate_root_key,
    parse_header,
)
from keys.crypto.context import canonical_context

EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Documented layout: format(1) | key id(16) | version(4) | iv(12) | body(n) | tag(16).
FORMAT_LEN, UUID_LEN, VERSION_LEN, IV_LEN, TAG_LEN = 1, 16, 4, 12, 16
HEADER_LEN = FORMAT_LEN + UUID_LEN + VERSION_LEN
OVERHEAD = HEADER_LEN + IV_LEN + TAG_LEN

plaintexts = st.binary(min_size=0, max_size=4096)
# Unicode keys and values, surrogates excluded (they cannot be UTF-8 encoded,
# and the API's JSON layer never hands them over).
context_text = st.text(min_size=0, max_size=24)
contexts = st.dictionaries(context_text, context_text, max_size=6)
materials = st.binary(min_size=32, max_size=32)
versions = st.integers(min_value=0, max_value=2**32 - 1)
key_ids = st.uuids()


def _decode_canonical(data: bytes) -> dict[str, str]:
    """The inverse of canonical_context, written from its documented form.

    If every encoding decodes back to the context it came from, the encoding
    is injective: two different contexts can never share an AAD.
    """
    if data == b"":
        return {}
    (count,) = struct.unpack(">I", data[:4])
    pos = 4
    out: dict[str, str] = {}
    for _ in range(count):
        parts = []
        for _ in range(2):
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            pos += 4
            parts.append(data[pos : pos + length].decode("utf-8"))
            pos += length
        out[parts[0]] = parts[1]
    assert pos == len(data), "trailing bytes after the last pair"
    return out


# -- encrypt / decrypt --------------------------------------------------------


@EXAMPLES
@given(material=materials, key_id=key_ids, version=versions, plaintext=plaintexts, context=contexts)
def test_it_round_trips_any_plaintext_under_any_context(
    material: bytes, key_id: uuid.UUID, version: int, plaintext: bytes, context: dict[str, str]
) -> None:
    blob = encrypt(material, key_id=key_id, version=version, plaintext=plaintext, context=context)
    assert decrypt(material, blob, context) == plaintext
    # The pairs, not the order they were given in, are what is bound.
    assert decrypt(material, blob, dict(reversed(list(context.items())))) == plaintext
    assert len(blob) == OVERHEAD + len(plaintext)


@EXAMPLES
@given(
    material=materials,
    plaintext=plaintexts,
    context=contexts,
    extra=st.tuples(context_text, context_text),
    data=st.data(),
)
def test_it_refuses_any_change_to_the_context(
    material: bytes,
    plaintext: bytes,
    context: dict[str, str],
    extra: tuple[str, str],
    data: st.DataObject,
) -> None:
    blob = encrypt(material, key_id=uuid.uuid4(), version=1, plaintext=plaintext, context=context)
    variants: list[dict[str, str]] = []
    # An added pair.
    if extra[0] not in context:
        variants.append({**context, extra[0]: extra[1]})
    if context:
        name = data.draw(st.sampled_from(sorted(context)))
        # A removed pair.
        variants.append({k: v for k, v in context.items() if k != name})
        # A changed value.
        new_value = data.draw(context_text.filter(lambda v: v != context[name]))
        variants.append({**context, name: new_value})
        # A pair with its key and value swapped.
        value = context[name]
        if value != name:
            swapped = {k: v for k, v in context.items() if k != name}
            swapped[value] = name
            if swapped != context:
                variants.append(swapped)
    assume(variants)
    for variant in variants:
        assert variant != context
        with pytest.raises(DecryptionError):
            decrypt(material, blob, variant)


@EXAMPLES
@given(material=materials, plaintext=plaintexts, context=contexts, data=st.data())
def test_it_refuses_any_single_bit_flip(
    material: bytes, plaintext: bytes, context: dict[str, str], data: st.DataObject
) -> None:
    blob = encrypt(material, key_id=uuid.uuid4(), version=7, plaintext=plaintext, context=context)
    bit = data.draw(st.integers(min_value=0, max_value=len(blob) * 8 - 1))
    altered = bytearray(blob)
    altered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((InvalidBlobError, DecryptionError)):
        decrypt(material, bytes(altered), context)


def test_it_refuses_a_bit_flip_in_every_byte_of_a_small_blob() -> None:
    # The exhaustive companion of the property above, for every position.
    material = generate_material()
    blob = encrypt(material, key_id=uuid.uuid4(), version=3, plaintext=b"abc", context={"k": "v"})
    for index in range(len(blob)):
        for bit in range(8):
            altered = bytearray(blob)
            altered[index] ^= 1 << bit
            with pytest.raises((InvalidBlobError, DecryptionError)):
                decrypt(material, bytes(altered), {"k": "v"})


@EXAMPLES
@given(material=materials, plaintext=plaintexts, data=st.data())
def test_it_refuses_a_truncated_or_extended_blob(material: bytes, plaintext: bytes, data: st.DataObject) -> None:
    blob = encrypt(material, key_id=uuid.uuid4(), version=1, plaintext=plaintext)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    with pytest.raises((InvalidBlobError, DecryptionError)):
        decrypt(material, blob[:cut])
    with pytest.raises(DecryptionError):
        decrypt(material, blob + data.draw(st.binary(min_size=1, max_size=16)))


def test_it_says_a_short_blob_is_not_a_blob_before_trying_to_authenticate_it() -> None:
    material = generate_material()
    blob = encrypt(material, key_id=uuid.uuid4(), version=1, plaintext=b"")
    assert len(blob) == OVERHEAD
    for cut in range(OVERHEAD):
        with pytest.raises(InvalidBlobError):
            decrypt(material, blob[:cut])


def test_it_refuses_the_wrong_material() -> None:
    blob = encrypt(generate_material(), key_id=uuid.uuid4(), version=1, plaintext=b"secret")
    with pytest.raises(DecryptionError):
        decrypt(generate_material(), blob)


def test_it_uses_a_fresh_iv_for_every_encryption() -> None:
    material, key_id = generate_material(), uuid.uuid4()
    blobs = {encrypt(material, key_id=key_id, version=1, plaintext=b"same") for _ in range(50)}
    ivs = {blob[HEADER_LEN : HEADER_LEN + IV_LEN] for blob in blobs}
    assert len(blobs) == len(ivs) == 50


def test_it_binds_no_context_and_an_empty_context_alike() -> None:
    # AWS treats an absent and an empty EncryptionContext as the same thing.
    material = generate_material()
    blob = encrypt(material, key_id=uuid.uuid4(), version=1, plaintext=b"x", context=None)
    assert decrypt(material, blob, {}) == b"x"
    with pytest.raises(DecryptionError):
        decrypt(material, blob, {"": ""})


def test_it_derives_every_crypto_error_from_one_base() -> None:
    assert issubclass(InvalidBlobError, CryptoError)
    assert issubclass(DecryptionError, CryptoError)


# -- the blob format -----------------------------------------------------------


@EXAMPLES
@given(material=materials, key_id=key_ids, version=versions, plaintext=plaintexts, context=contexts)
def test_it_writes_the_documented_blob_layout(
    material: bytes, key_id: uuid.UUID, version: int, plaintext: bytes, context: dict[str, str]
) -> None:
    blob = encrypt(material, key_id=key_id, version=version, plaintext=plaintext, context=context)
    assert blob[0] == 0x01
    assert blob[1:17] == key_id.bytes
    assert blob[17:21] == struct.pack(">I", version)
    iv = blob[21:33]
    assert len(iv) == IV_LEN
    # The rest is AES-256-GCM body + 16-byte tag over AAD = header + canonical
    # context: a plain AESGCM, knowing only the documentation, opens it.
    aad = blob[:HEADER_LEN] + canonical_context(context)
    assert AESGCM(material).decrypt(iv, blob[33:], aad) == plaintext
    assert len(blob[33:]) == len(plaintext) + TAG_LEN


@EXAMPLES
@given(material=materials, key_id=key_ids, version=versions)
def test_it_reads_the_key_id_and_version_from_the_header(material: bytes, key_id: uuid.UUID, version: int) -> None:
    blob = encrypt(material, key_id=key_id, version=version, plaintext=b"p")
    header = parse_header(blob)
    assert header.key_id == key_id
    assert header.version == version


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x01",
        b"\x01" + bytes(OVERHEAD - 2),
        b"\x02" + bytes(OVERHEAD),
        b"\x00" + bytes(OVERHEAD + 10),
        b"not a ciphertext blob at all, but long enough",
    ],
)
def test_it_refuses_to_parse_a_header_that_is_not_ours(blob: bytes) -> None:
    with pytest.raises(InvalidBlobError):
        parse_header(blob)


def test_it_refuses_a_version_that_does_not_fit_four_bytes() -> None:
    with pytest.raises(struct.error):
        encrypt(generate_material(), key_id=uuid.uuid4(), version=2**32, plaintext=b"x")


# -- canonical_context -------------------------------------------------------------


@EXAMPLES
@given(context=contexts, data=st.data())
def test_it_encodes_a_context_independently_of_pair_order(context: dict[str, str], data: st.DataObject) -> None:
    shuffled = dict(data.draw(st.permutations(list(context.items()))))
    assert canonical_context(shuffled) == canonical_context(context)


@EXAMPLES
@given(context=contexts)
def test_it_encodes_a_context_decodably(context: dict[str, str]) -> None:
    assert _decode_canonical(canonical_context(context)) == context


@EXAMPLES
@given(a=contexts, b=contexts)
def test_it_encodes_different_contexts_differently(a: dict[str, str], b: dict[str, str]) -> None:
    assert (canonical_context(a) == canonical_context(b)) == (a == b)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"ab": ""}, {"a": "b"}),
        ({"a": "bc"}, {"ab": "c"}),
        ({"a": "b", "c": "d"}, {"a": "bcd"}),
        ({"a": "b", "c": "d"}, {"a": "b\x00c\x00d"}),
        ({"a": "b"}, {"b": "a"}),
        ({"": "ab"}, {"a": "b"}),
        ({"a": ""}, {"": "a"}),
        ({"": ""}, {}),
        ({"é": "x"}, {"e\u0301": "x"}),
        ({"\x00\x00\x00\x01": ""}, {}),
    ],
)
def test_it_keeps_tricky_contexts_apart(left: dict[str, str], right: dict[str, str]) -> None:
    assert canonical_context(left) != canonical_context(right)


def test_it_encodes_no_context_as_nothing() -> None:
    assert canonical_context(None) == canonical_context({}) == b""


# -- LocalRootKey ---------------------------------------------------------------------


@EXAMPLES
@given(root=materials, secret=st.binary(min_size=0, max_size=256), aad=st.binary(max_size=64))
def test_it_wraps_and_unwraps_under_the_root_key(root: bytes, secret: bytes, aad: bytes) -> None:
    provider = LocalRootKey(root)
    wrapped = provider.wrap(secret, aad)
    assert len(wrapped) == 1 + 12 + len(secret) + 16
    assert wrapped[0] == 0x01
    assert provider.unwrap(wrapped, aad) == secret


@EXAMPLES
@given(root=materials, secret=st.binary(min_size=1, max_size=64), aad=st.binary(max_size=64), other=st.binary())
def test_it_refuses_to_unwrap_under_the_wrong_aad(root: bytes, secret: bytes, aad: bytes, other: bytes) -> None:
    assume(other != aad)
    provider = LocalRootKey(root)
    with pytest.raises(DecryptionError):
        provider.unwrap(provider.wrap(secret, aad), other)


def test_it_refuses_material_wrapped_by_another_root_key() -> None:
    wrapped = LocalRootKey(os.urandom(32)).wrap(b"material", b"aad")
    with pytest.raises(DecryptionError):
        LocalRootKey(os.urandom(32)).unwrap(wrapped, b"aad")


def test_it_refuses_altered_or_foreign_wrapped_bytes() -> None:
    provider = LocalRootKey(os.urandom(32))
    wrapped = provider.wrap(os.urandom(32), b"aad")
    for index in range(len(wrapped)):
        altered = bytearray(wrapped)
        altered[index] ^= 0x80
        with pytest.raises((InvalidBlobError, DecryptionError)):
            provider.unwrap(bytes(altered), b"aad")
    for bad in (b"", b"\x01" * 28, b"\x02" + wrapped[1:]):
        with pytest.raises(InvalidBlobError):
            provider.unwrap(bad, b"aad")


def test_it_wraps_with_a_fresh_nonce_each_time() -> None:
    provider = LocalRootKey(os.urandom(32))
    assert provider.wrap(b"same", b"aad") != provider.wrap(b"same", b"aad")


def test_it_gives_a_root_key_a_stable_id_that_reveals_nothing() -> None:
    raw = os.urandom(32)
    key_id = LocalRootKey(raw).key_id
    assert key_id == LocalRootKey(raw).key_id
    assert key_id == LocalRootKey.from_base64(base64.b64encode(raw).decode()).key_id
    assert key_id != LocalRootKey(os.urandom(32)).key_id
    assert key_id.startswith("local:")
    check_value = key_id.removeprefix("local:")
    assert len(check_value) == 16
    int(check_value, 16)
    for shown in (raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        assert check_value not in shown
        # Not even the first eight bytes of the key, in any spelling.
        assert shown[:16] not in key_id


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_it_requires_a_256_bit_root_key(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        LocalRootKey(os.urandom(size))


@pytest.mark.parametrize(
    "text", ["not base64!", "AAAA", base64.b64encode(os.urandom(31)).decode()], ids=["not-base64", "short", "31-bytes"]
)
def test_it_refuses_a_root_key_that_is_not_base64_of_32_bytes(text: str) -> None:
    with pytest.raises(ValueError):
        LocalRootKey.from_base64(text)


def test_it_reads_a_root_key_with_surrounding_whitespace() -> None:
    raw = os.urandom(32)
    assert LocalRootKey.from_base64("  " + base64.b64encode(raw).decode() + "\n").key_id == LocalRootKey(raw).key_id


# -- generate_root_key -------------------------------------------------------------


def test_it_generates_a_root_key_file_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "root_key"
    generate_root_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    assert len(raw) == 32
    LocalRootKey.from_base64(path.read_text(encoding="ascii"))


def test_it_never_overwrites_a_root_key_file(tmp_path: Path) -> None:
    path = tmp_path / "root_key"
    generate_root_key(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        generate_root_key(path)
    assert path.read_bytes() == before


def test_it_generates_a_new_root_key_each_time(tmp_path: Path) -> None:
    generate_root_key(tmp_path / "a")
    generate_root_key(tmp_path / "b")
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()


def test_it_unwraps_under_any_root_key_of_a_keyring_and_wraps_under_the_last() -> None:
    from keys.crypto import RootKeyring, new_root_key_line

    old_line, new_line = new_root_key_line("old"), new_root_key_line("new")
    old = RootKeyring.parse(old_line)
    both = RootKeyring.parse(f"# rotated\n{old_line}\n\n{new_line}\n")
    assert both.key_ids[0] == old.key_id and both.key_id != old.key_id
    wrapped_old = old.wrap(b"m" * 32, b"aad")
    assert both.unwrap(wrapped_old, b"aad") == b"m" * 32
    assert both.get(old.key_id) is not None
    wrapped_new = both.wrap(b"n" * 32, b"aad")
    with pytest.raises(DecryptionError):
        old.unwrap(wrapped_new, b"aad")
    with pytest.raises(DecryptionError):
        both.unwrap(wrapped_old, b"other aad")
    with pytest.raises(ValueError, match="line 2"):
        RootKeyring.parse(f"{old_line}\nlabel:not-base64!\n")
    with pytest.raises(ValueError):
        RootKeyring.parse("# nothing\n")
