"""Run the test OpenID provider: ``python -m tests.oidc_provider.serve WORKDIR REDIRECT_URI``.

Binds a free port on 127.0.0.1, generates an RS256 key, creates its SQLite
database under WORKDIR, seeds the users of ``WORKDIR/directory.json`` and
one confidential client (``kmsweb`` / ``WORKDIR/client_secret``), prints
``READY <issuer>`` and serves until killed.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "kmsweb"


def main() -> None:
    workdir, redirect_uri = Path(sys.argv[1]), sys.argv[2]
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    port = server.server_address[1]
    issuer = f"http://localhost:{port}/o"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.oidc_provider.settings",
        IDP_SECRET_KEY=secrets.token_urlsafe(32),
        IDP_DATABASE=str(workdir / "idp.sqlite3"),
        IDP_DIRECTORY=str(workdir / "directory.json"),
        IDP_ISSUER=issuer,
        IDP_RSA_PRIVATE_KEY=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0, interactive=False)
    for username, entry in json.loads((workdir / "directory.json").read_text()).items():
        User.objects.create_user(username=username, password=entry["password"])
    Application.objects.create(
        name="kmsweb",
        client_id=CLIENT_ID,
        client_secret=(workdir / "client_secret").read_text().strip(),
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=redirect_uri,
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=True,
    )
    server.set_app(WSGIHandler())
    print(f"READY {issuer}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
