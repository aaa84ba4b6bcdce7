"""Claims from the directory file, re-read at every token: tests change a user's groups between sign-ins.

Each user's entry may ask the provider to misbehave, to test that kmsweb
refuses: ``"tamper": "aud"`` issues the id_token for another audience (with our
client as ``azp``),
``"tamper": "sig"`` signs it with a key the provider does not publish,
``"tamper": "die"`` makes the whole provider exit when the client comes to
redeem the user's code (the provider going down mid-sign-in).
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk, jwt
from oauth2_provider.oauth2_validators import OAuth2Validator

_ROGUE_KEY = jwk.JWK.from_pem(
    rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
)


def directory() -> dict[str, dict[str, Any]]:
    with open(os.environ["IDP_DIRECTORY"]) as f:
        return json.load(f)


class DirectoryValidator(OAuth2Validator):
    # Every claim below in the id_token, whichever scopes were asked for.
    oidc_claim_scope = None

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        entry = directory().get(request.user.username, {})
        return {
            "preferred_username": request.user.username,
            "email": entry.get("email", f"{request.user.username}@example.org"),
            "given_name": entry.get("given_name", request.user.username.title()),
            "groups": entry.get("groups", []),
            "amr": entry.get("amr", ["pwd"]),
        }

    def validate_code(self, client_id: str, code: str, client: Any, request: Any, *args: Any, **kwargs: Any) -> bool:
        valid = super().validate_code(client_id, code, client, request, *args, **kwargs)
        if valid and directory().get(request.user.username, {}).get("tamper") == "die":
            os._exit(1)
        return valid

    def get_id_token_dictionary(self, token: Any, token_handler: Any, request: Any) -> tuple[dict[str, Any], Any]:
        claims, expiration_time = super().get_id_token_dictionary(token, token_handler, request)
        if directory().get(request.user.username, {}).get("tamper") == "aud":
            # Issued to another client, naming ours as the authorized party.
            claims["aud"] = "some-other-client"
            claims["azp"] = request.client.client_id
        return claims, expiration_time

    def finalize_id_token(self, id_token: Any, token: Any, token_handler: Any, request: Any) -> str:
        serialized = super().finalize_id_token(id_token, token, token_handler, request)
        if directory().get(request.user.username, {}).get("tamper") != "sig":
            return serialized
        # Same header (and kid), same claims, another key's signature.
        genuine = jwt.JWT(jwt=serialized, key=request.client.jwk_key)
        forged = jwt.JWT(header=genuine.header, claims=genuine.claims)
        forged.make_signed_token(_ROGUE_KEY)
        return forged.serialize()
