"""CPU per KMS request, measured in one process, without HTTP or a load driver.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kmsweb_bench \\
        python bench/profile_api.py --op Encrypt --n 3000 [--profile out.prof]

Builds the same signed requests as bench/sign.py, hands them to kmsweb's WSGI
application directly (no socket, no gunicorn) and reports the process CPU
time per request. Process CPU time does not count what other processes on
the machine take, so the figure stays comparable while the machine is busy,
which wrk's requests/s does not. It does not count PostgreSQL's own CPU
(the server's side of each INSERT). ``--profile`` writes a cProfile dump of
the measured loop (``python -m pstats out.prof``, or snakeviz).

The database is prepared as bench/serve.py prepares it for the kmsweb
configuration (migrate, bootstrap, the bench access key).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import os
import pathlib
import subprocess
import sys
import time

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path[:0] = [str(REPO_DIR), str(BENCH_DIR)]

import serve  # noqa: E402
import sign  # noqa: E402

URL = "http://127.0.0.1:8900/"
FLOOR_KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"


def _environ(signed: sign.SignedRequest) -> dict:
    body = signed.body.encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8900",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in signed.headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key != "CONTENT_LENGTH":
            environ[f"HTTP_{key}"] = value
    return environ


def _call(app, signed: sign.SignedRequest) -> tuple[int, bytes]:
    status: list[str] = []
    chunks = app(_environ(signed), lambda s, h, exc_info=None: status.append(s))
    body = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    return int(status[0].split()[0]), body


def _pg_backend() -> int | None:
    """The pid of the PostgreSQL backend serving this process's connection."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _proc_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0 elsewhere."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", default="Encrypt", choices=sign.OPERATIONS)
    parser.add_argument(
        "--config",
        default="kmsweb",
        choices=("kmsweb", "floor-crypto-audit", "floor-parse"),
        help="what answers the requests: kmsweb, or one of the floors (for the same measure of them)",
    )
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--profile", help="write a cProfile dump of the measured loop here")
    parser.add_argument("--no-setup", action="store_true", help="skip migrate/bootstrap (already done)")
    args = parser.parse_args()

    config = serve.CONFIGS[args.config]
    os.environ.update(serve.config_env(config))
    if not args.no_setup:
        if args.config == "kmsweb":
            serve.ensure_bench_password()
        for cmd in config.setup:
            subprocess.run(cmd, cwd=config.cwd or REPO_DIR, capture_output=True, check=False)

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsweb.settings")
    django.setup()
    if args.config == "kmsweb":
        from kmsweb.wsgi import application as app  # what gunicorn serves
    else:
        from django.core.wsgi import get_wsgi_application

        app = get_wsgi_application()
    if args.config != "kmsweb":
        # The floors take any key id and do not check the signature.
        blob = None
        if args.op == "Decrypt":
            status, answer = _call(
                app, sign.sign(URL, "Encrypt", sign.request_body("Encrypt", FLOOR_KEY_ID), "AKIAFLOOR", "x")
            )
            blob = base64.b64decode(json.loads(answer)["CiphertextBlob"])
        request = sign.sign(URL, args.op, sign.request_body(args.op, FLOOR_KEY_ID, blob), "AKIAFLOOR", "x")
        return _measure(app, args, request)

    def signed(op: str, body: str) -> sign.SignedRequest:
        return sign.sign(URL, op, body, config.access_key, config.secret)

    # CreateKey is not one of sign.OPERATIONS: sign it here through botocore.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    def signed_any(op: str, payload: dict) -> sign.SignedRequest:
        body = json.dumps(payload)
        headers = {"Host": "127.0.0.1:8900", "Content-Type": sign.CONTENT_TYPE, "X-Amz-Target": f"TrentService.{op}"}
        request = AWSRequest(method="POST", url=URL, data=body.encode(), headers=headers)
        SigV4Auth(Credentials(config.access_key, config.secret), "kms", "us-east-1").add_auth(request)
        return sign.SignedRequest("POST", URL, "/", dict(request.headers.items()), body)

    status, answer = _call(app, signed_any("CreateKey", {"Description": "profile_api"}))
    if status != 200:
        print(f"CreateKey failed: {status} {answer[:300]!r}", file=sys.stderr)
        return 1
    key_id = json.loads(answer)["KeyMetadata"]["KeyId"]
    blob = None
    if args.op == "Decrypt":
        status, answer = _call(app, signed("Encrypt", sign.request_body("Encrypt", key_id)))
        blob = base64.b64decode(json.loads(answer)["CiphertextBlob"])
    request = signed(args.op, sign.request_body(args.op, key_id, blob))
    return _measure(app, args, request)


def _measure(app, args: argparse.Namespace, request: sign.SignedRequest) -> int:

    for _ in range(args.warmup):
        status, answer = _call(app, request)
        if status != 200:
            print(f"{args.op} failed: {status} {answer[:300]!r}", file=sys.stderr)
            return 1
    # Process CPU time as the clock: waits on PostgreSQL do not count.
    backend = _pg_backend()
    pg0 = _proc_cpu(backend)
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    for _ in range(args.n):
        _call(app, request)
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    pg = _proc_cpu(backend) - pg0
    print(
        f"{args.config} {args.op}: {args.n} requests, {cpu / args.n * 1e3:.3f} ms CPU/request in the server process"
        + (f" + {pg / args.n * 1e3:.3f} ms in its PostgreSQL backend" if backend else "")
        + f" ({wall / args.n * 1e3:.3f} ms wall), one process"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
