"""Build a SigV4-signed KMS request and write it as a wrk Lua script.

The request is signed with botocore's own SigV4 signer, exactly as an AWS SDK
would sign it, for the service ``kms``.  A signed request stays valid for 15
minutes (X-Amz-Date skew), so wrk can replay it for a whole run; the runner
(bench/run.py) signs again before every run.

    python bench/sign.py --url http://127.0.0.1:8000/ --access-key AKID \\
        --secret SECRET --key-id KEY --op Encrypt --out /tmp/encrypt.lua

Operations and bodies (the same for every target):

* Encrypt          {"KeyId": K, "Plaintext": <4 KiB, base64>}
* Decrypt          {"CiphertextBlob": <blob, base64>, "KeyId": K}
* GenerateDataKey  {"KeyId": K, "KeySpec": "AES_256"}

and, each with a key of its own spec (made by the runner):

* Sign-ECC_NIST_P256  Sign {"KeyId": K, "Message": <4 KiB>, "MessageType": "RAW", "SigningAlgorithm": "ECDSA_SHA_256"}
* Sign-RSA_2048       Sign, the same with "RSASSA_PKCS1_V1_5_SHA_256"
* GenerateMac         {"KeyId": K, "Message": <4 KiB>, "MacAlgorithm": "HMAC_SHA_256"} with an HMAC_256 key

The 4 KiB plaintext (and message) is the same pseudo-random bytes on every run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

OPERATIONS = ("Encrypt", "Decrypt", "GenerateDataKey")
# Benchmark operations that need a key of another spec: (KeySpec, KeyUsage, KMS operation, algorithm member).
KEY_OPERATIONS = {
    "Sign-ECC_NIST_P256": ("ECC_NIST_P256", "SIGN_VERIFY", "Sign", {"SigningAlgorithm": "ECDSA_SHA_256"}),
    "Sign-RSA_2048": ("RSA_2048", "SIGN_VERIFY", "Sign", {"SigningAlgorithm": "RSASSA_PKCS1_V1_5_SHA_256"}),
    "GenerateMac": ("HMAC_256", "GENERATE_VERIFY_MAC", "GenerateMac", {"MacAlgorithm": "HMAC_SHA_256"}),
}
ALL_OPERATIONS = OPERATIONS + tuple(KEY_OPERATIONS)
CONTENT_TYPE = "application/x-amz-json-1.1"
PLAINTEXT_SIZE = 4096
PLAINTEXT_SEED = 4096


def canonical_op(name: str) -> str:
    """Accept Encrypt / encrypt / generate-data-key / generate_data_key ..."""
    squashed = name.replace("-", "").replace("_", "").lower()
    for op in ALL_OPERATIONS:
        if op.replace("-", "").replace("_", "").lower() == squashed:
            return op
    raise ValueError(f"unknown operation {name!r}; choose from {', '.join(ALL_OPERATIONS)}")


def kms_operation(op: str) -> str:
    """The KMS operation (X-Amz-Target) a benchmark operation calls."""
    op = canonical_op(op)
    return KEY_OPERATIONS[op][2] if op in KEY_OPERATIONS else op


def bench_plaintext(size: int = PLAINTEXT_SIZE) -> bytes:
    """The benchmark's plaintext: fixed pseudo-random bytes (not compressible)."""
    return random.Random(PLAINTEXT_SEED).randbytes(size)


def request_body(
    op: str, key_id: str, ciphertext_blob: bytes | None = None, plaintext_size: int = PLAINTEXT_SIZE
) -> str:
    op = canonical_op(op)
    if op in KEY_OPERATIONS:
        message = base64.b64encode(bench_plaintext(plaintext_size)).decode()
        payload = {"KeyId": key_id, "Message": message, **KEY_OPERATIONS[op][3]}
        if KEY_OPERATIONS[op][2] == "Sign":
            payload["MessageType"] = "RAW"
    elif op == "Encrypt":
        payload = {"KeyId": key_id, "Plaintext": base64.b64encode(bench_plaintext(plaintext_size)).decode()}
    elif op == "Decrypt":
        if ciphertext_blob is None:
            raise ValueError("Decrypt needs a ciphertext blob")
        payload = {"CiphertextBlob": base64.b64encode(ciphertext_blob).decode(), "KeyId": key_id}
    else:
        payload = {"KeyId": key_id, "KeySpec": "AES_256"}
    return json.dumps(payload, separators=(",", ":"))


@dataclass
class SignedRequest:
    method: str
    url: str
    path: str
    headers: dict[str, str]
    body: str


def host_header(url: str) -> str:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def sign(
    url: str,
    op: str,
    body: str,
    access_key: str,
    secret: str,
    region: str = "us-east-1",
    session_token: str | None = None,
) -> SignedRequest:
    """Sign one POST of ``body`` for KMS operation ``op`` with botocore's SigV4."""
    op = kms_operation(op)
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    headers = {
        "Host": host_header(url),
        "Content-Type": CONTENT_TYPE,
        "X-Amz-Target": f"TrentService.{op}",
    }
    request = AWSRequest(method="POST", url=url, data=body.encode(), headers=headers)
    SigV4Auth(Credentials(access_key, secret, session_token), "kms", region).add_auth(request)
    return SignedRequest("POST", url, path, dict(request.headers.items()), body)


def lua_string(value: str) -> str:
    """A Lua string literal for any text (bytes escaped as \\ddd)."""
    out = ['"']
    for byte in value.encode():
        char = chr(byte)
        if char in '"\\' or byte < 32 or byte > 126:
            out.append(f"\\{byte:03d}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def lua_script(signed: SignedRequest, strict: bool = False) -> str:
    lines = [
        "-- Generated by bench/sign.py: one SigV4-signed KMS request, replayed by wrk.",
        f"wrk.method = {lua_string(signed.method)}",
        f"wrk.path = {lua_string(signed.path)}",
        f"wrk.body = {lua_string(signed.body)}",
    ]
    for name, value in signed.headers.items():
        lines.append(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}")
    if strict:
        # Count every non-2xx answer exactly (wrk's own summary lumps 3xx in
        # with 2xx).  Costs the driver a Lua call per response.
        lines += [
            "local threads = {}",
            "function setup(thread) table.insert(threads, thread) end",
            "function init(args) non2xx = 0 end",
            "function response(status, headers, body)",
            "  if status < 200 or status > 299 then non2xx = non2xx + 1 end",
            "end",
            "function done(summary, latency, requests)",
            "  local total = 0",
            '  for _, t in ipairs(threads) do total = total + t:get("non2xx") end',
            '  io.write(string.format("BENCH_NON2XX %d\\n", total))',
            "end",
        ]
    return "\n".join(lines) + "\n"


def write_lua(path: str, signed: SignedRequest, strict: bool = False) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(lua_script(signed, strict))


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Write a wrk script replaying one signed KMS request.")
    parser.add_argument("--url", default=env("BENCH_URL", "http://127.0.0.1:8000/"))
    parser.add_argument("--access-key", default=env("BENCH_ACCESS_KEY_ID"))
    parser.add_argument("--secret", default=env("BENCH_SECRET_ACCESS_KEY"))
    parser.add_argument("--region", default=env("BENCH_REGION", "us-east-1"))
    parser.add_argument("--key-id", default=env("BENCH_KEY_ID"))
    parser.add_argument("--op", default="Encrypt", help=", ".join(ALL_OPERATIONS))
    parser.add_argument("--ciphertext-blob", help="base64 blob for Decrypt")
    parser.add_argument("--strict", action="store_true", help="count non-2xx answers in Lua")
    parser.add_argument("--out", required=True, help="the .lua file to write")
    args = parser.parse_args(argv)
    if not (args.access_key and args.secret and args.key_id):
        parser.error("--access-key, --secret and --key-id (or BENCH_* env) are required")
    blob = base64.b64decode(args.ciphertext_blob) if args.ciphertext_blob else None
    body = request_body(args.op, args.key_id, blob)
    signed = sign(args.url, args.op, body, args.access_key, args.secret, args.region)
    write_lua(args.out, signed, args.strict)
    print(f"wrote {args.out}: {kms_operation(args.op)} to {args.url} ({len(body)} byte body)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
