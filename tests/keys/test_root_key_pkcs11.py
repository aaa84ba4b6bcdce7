"""The root key inside a PKCS#11 token (SoftHSM2), and ``rotate_root_key`` moving
all material from the root key file to the token and back."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from keys import services as svc
from keys.crypto import pkcs11
from keys.models import Key, KeyMaterial
from keys.services.material import material_unwrap, root_keyring, root_keyring_forget
from keys.services.platform import platform_cache_clear, platform_decrypt, platform_encrypt
from keys.services.root_rotation import root_key_status
from kmsweb.lib.errors import InternalError
from tests.conftest import Persona
from tests.softhsm import LIBRARY, Token, init_token, softhsm_dir

pytestmark = pytest.mark.django_db
ROOT_LABEL = "kmsweb-root-key"


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Token]:
    softhsm_dir(tmp_path, monkeypatch)
    yield init_token()
    pkcs11.forget_all()


def use(settings: Any, *, token: Token | None, current: str, file: Path | None) -> None:
    """Point the root key settings at the token and/or the file, as a restart with new env would."""
    settings.KMSWEB_ROOT_KEY_PKCS11_LIBRARY = LIBRARY if token else ""
    settings.KMSWEB_ROOT_KEY_PKCS11_TOKEN_LABEL = token.label if token else ""
    settings.KMSWEB_ROOT_KEY_PKCS11_PIN = token.pin if token else ""
    settings.KMSWEB_ROOT_KEY_PKCS11_KEY_LABEL = ROOT_LABEL
    settings.KMSWEB_ROOT_KEY_CURRENT = current
    settings.KMSWEB_ROOT_KEY_FILE = str(file) if file else None
    settings.KMSWEB_ROOT_KEY = file.read_text() if file else ""
    root_keyring_forget()
    platform_cache_clear()


def rotate() -> str:
    out = io.StringIO()
    call_command("rotate_root_key", stdout=out)
    return out.getvalue()


def wrapped_under(prefix: str) -> bool:
    rows = KeyMaterial.objects.exclude(root_key_id="")
    return all(r.root_key_id.startswith(prefix) for r in rows) and rows.exists()


def test_material_moves_from_the_file_to_the_token_and_back(
    settings: Any, token: Token, root_key_file: Path, key_admin: Persona, make_key: Callable[..., Key]
) -> None:
    admin = key_admin.caller()
    key = make_key()
    blob = svc.key_encrypt(caller=admin, key=key, plaintext=b"moves", context={"a": "b"}).ciphertext
    secret = platform_encrypt(purpose="tests-secrets", plaintext=b"platform", context={"row": "1"})
    assert wrapped_under("local:")

    # To the token: its key is generated there, then everything is re-wrapped by it.
    use(settings, token=token, current="pkcs11", file=root_key_file)
    out = io.StringIO()
    call_command("rotate_root_key", "--new-key", stdout=out)
    assert "failed=0" in out.getvalue()
    token_id = f"pkcs11:{token.label}/{ROOT_LABEL}"
    assert root_keyring(reload=True).key_id == token_id
    assert wrapped_under("pkcs11:")
    assert all(bytes(m.wrapped)[0] == pkcs11.WRAP_FORMAT for m in KeyMaterial.objects.exclude(root_key_id=""))
    attrs = token.session_token().key_attributes(ROOT_LABEL)
    assert (attrs.sensitive, attrs.extractable, attrs.never_extractable) == (True, False, True)

    # The file can go: the token alone unwraps everything.
    use(settings, token=token, current="pkcs11", file=None)
    assert svc.key_decrypt(caller=admin, ciphertext=blob, context={"a": "b"}).plaintext == b"moves"
    assert platform_decrypt(purpose="tests-secrets", blob=secret, context={"row": "1"}) == b"platform"
    fresh_key = make_key()
    assert KeyMaterial.objects.get(key=fresh_key).root_key_id == token_id
    assert root_key_status()["wraps"] == {token_id: KeyMaterial.objects.exclude(root_key_id="").count()}

    # And back to the file.
    use(settings, token=token, current="file", file=root_key_file)
    assert "failed=0" in rotate()
    assert wrapped_under("local:")
    use(settings, token=None, current="file", file=root_key_file)
    assert svc.key_decrypt(caller=admin, ciphertext=blob, context={"a": "b"}).plaintext == b"moves"
    reread = Key.objects.select_related("current_material").get(pk=fresh_key.pk)
    assert svc.key_encrypt(caller=admin, key=reread, plaintext=b"x").key.id == fresh_key.id


def test_material_under_a_token_is_unreadable_without_the_token(
    settings: Any, token: Token, root_key_file: Path, make_key: Callable[..., Key]
) -> None:
    use(settings, token=token, current="pkcs11", file=root_key_file)
    call_command("rotate_root_key", "--new-key", stdout=io.StringIO())
    key = make_key()
    material = KeyMaterial.objects.get(key=key)
    # A wrong PIN: the token refuses, and kmsweb says so instead of failing obscurely.
    use(settings, token=Token(label=token.label, pin="wrong-pin", so_pin=""), current="file", file=root_key_file)
    with pytest.raises(InternalError, match="PKCS#11 token"):
        material_unwrap(material)
    # Another token with a key of the same label cannot unwrap it (nor move it) either.
    other = init_token()
    use(settings, token=other, current="pkcs11", file=root_key_file)
    with pytest.raises(CommandError, match="could not be re-wrapped"):
        call_command("rotate_root_key", "--new-key", stdout=io.StringIO())
    with pytest.raises(InternalError):
        material_unwrap(material)


def test_a_second_token_root_key_of_the_same_label_is_refused(settings: Any, token: Token, root_key_file: Path) -> None:
    use(settings, token=token, current="pkcs11", file=root_key_file)
    call_command("rotate_root_key", "--new-key", stdout=io.StringIO())
    with pytest.raises(CommandError, match="already holds"):
        call_command("rotate_root_key", "--new-key", stdout=io.StringIO())
