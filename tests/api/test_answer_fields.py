"""Members of successful answers that AWS includes only sometimes."""

from __future__ import annotations

import pytest

from keys import services as key_services
from tests.api.direct import call
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def test_it_names_key_material_only_for_symmetric_keys(key_admin: Persona) -> None:
    symmetric = str(key_services.key_create(caller=key_admin.caller()).id)
    rsa = str(key_services.key_create(caller=key_admin.caller(), key_spec="RSA_2048", key_usage="ENCRYPT_DECRYPT").id)
    blob = call(key_admin, "Encrypt", KeyId=symmetric, Plaintext=b"p").blob("CiphertextBlob")

    opened = call(key_admin, "Decrypt", CiphertextBlob=blob)
    assert opened.out("KeyMaterialId")
    to_rsa = call(
        key_admin,
        "ReEncrypt",
        CiphertextBlob=blob,
        DestinationKeyId=rsa,
        DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256",
    )
    assert to_rsa.out("SourceKeyMaterialId") == opened.out("KeyMaterialId")
    assert "DestinationKeyMaterialId" not in to_rsa.body

    rsa_blob = to_rsa.blob("CiphertextBlob")
    rsa_opened = call(
        key_admin, "Decrypt", CiphertextBlob=rsa_blob, KeyId=rsa, EncryptionAlgorithm="RSAES_OAEP_SHA_256"
    )
    assert rsa_opened.blob("Plaintext") == b"p"
    assert "KeyMaterialId" not in rsa_opened.body
    back = call(
        key_admin,
        "ReEncrypt",
        CiphertextBlob=rsa_blob,
        SourceKeyId=rsa,
        SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256",
        DestinationKeyId=symmetric,
    )
    assert "SourceKeyMaterialId" not in back.body
    assert back.out("DestinationKeyMaterialId") == opened.out("KeyMaterialId")


def test_it_answers_rotate_key_on_demand_with_the_key_arn(key_admin: Persona) -> None:
    key = key_services.key_create(caller=key_admin.caller())
    assert call(key_admin, "RotateKeyOnDemand", KeyId=str(key.id)).out("KeyId") == key.arn
