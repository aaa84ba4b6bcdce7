"""Least-privilege review benchmark (issue 13): the engine's part, over synthetic facts.

    .venv/bin/python bench/least_privilege.py

No database: the review and the preview work on a compliance ``Snapshot``,
whose loading is measured by ``bench/compliance.py`` (the same snapshot).
Facts: 10,000 customer managed keys (90% under the default key policy, 5%
naming one application role, 5% opening Decrypt to another account; 10%
tagged), 1,000 principals (a handful of shared identity policies, 10% with a
policy of their own naming specific keys), 50,000 grants over 2,000 grantees.
Observed calls: 2,000 distinct (action, key, encryption context) groups of
one application.

Times, each once and whole (wall, this process's CPU): an access review of
the application (allowed against used over every key, the generated policy
and its confirmation by the engine); a key policy change preview; an inline
identity policy change preview. Prints the figures and the load average.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compliance.review import analysis, preview  # noqa: E402
from compliance.rules.facts import GrantFact, KeyFact, PolicyFact, PrincipalFact, Snapshot  # noqa: E402

ACCOUNT = "111122223333"
OTHER = "444455556666"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def doc(*statements: dict[str, object]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ROOT_STATEMENT = {
    "Sid": "Root",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
    "Action": "kms:*",
    "Resource": "*",
}


def facts(rng: random.Random) -> tuple[Snapshot, PrincipalFact, list[analysis.ObservedCall]]:
    app_arn = f"arn:aws:iam::{ACCOUNT}:role/app"
    default = doc(ROOT_STATEMENT)
    naming = doc(
        ROOT_STATEMENT,
        {"Sid": "App", "Effect": "Allow", "Principal": {"AWS": app_arn}, "Action": "kms:Decrypt", "Resource": "*"},
    )
    public = doc(
        ROOT_STATEMENT,
        {
            "Sid": "Partner",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"},
            "Action": "kms:Decrypt",
            "Resource": "*",
        },
    )
    keys = []
    for i in range(10_000):
        roll = rng.random()
        policy = default if roll < 0.9 else naming if roll < 0.95 else public
        tags = {"team": f"t{i % 7}"} if i % 10 == 0 else {}
        keys.append(
            KeyFact(
                str(uuid.UUID(int=rng.getrandbits(128))),
                ACCOUNT,
                "us-east-1",
                "Enabled",
                "SYMMETRIC_DEFAULT",
                "ENCRYPT_DECRYPT",
                "AWS_KMS",
                policy,
                NOW,
                tags=tags,
            )
        )
    shared = [
        PolicyFact("Full", doc({"Effect": "Allow", "Action": "kms:*", "Resource": "*"}), "inline"),
        PolicyFact(
            "Crypto", doc({"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"}), "managed"
        ),
        PolicyFact(
            "Read", doc({"Effect": "Allow", "Action": ["kms:Describe*", "kms:List*"], "Resource": "*"}), "managed"
        ),
    ]
    principals = [PrincipalFact(app_arn, ACCOUNT, "role", "app", (shared[0],))]
    for i in range(999):
        own: tuple[PolicyFact, ...] = (shared[i % 3],)
        if i % 10 == 0:
            chosen = [k.arn for k in rng.sample(keys, 5)]
            own += (
                PolicyFact(f"own{i}", doc({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": chosen}), "inline"),
            )
        principals.append(PrincipalFact(f"arn:aws:iam::{ACCOUNT}:user/u{i}", ACCOUNT, "user", f"u{i}", own))
    grantees = [p.arn for p in principals[1:]] + [f"arn:aws:iam::{OTHER}:user/x{i}" for i in range(1_001)]
    grants = [
        GrantFact(f"g{i}", keys[rng.randrange(len(keys))].id, ACCOUNT, rng.choice(grantees[:2000]), ("Decrypt",), NOW)
        for i in range(50_000)
    ]
    calls = []
    used = rng.sample(keys, 500)
    for key in used:
        for action in ("kms:Encrypt", "kms:Decrypt"):
            for tenant in ("a", "b"):
                calls.append(
                    analysis.ObservedCall(
                        action, key.arn, ACCOUNT, key.id, (("purpose", "billing"), ("tenant", tenant)), 10, NOW
                    )
                )
    snapshot = Snapshot(now=NOW, keys=tuple(keys), principals=tuple(principals), grants=tuple(grants))
    return snapshot, principals[0], calls


def timed(label: str, fn: object) -> tuple[str, float, float, object]:
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()  # type: ignore[operator]
    return label, time.perf_counter() - start, time.process_time() - cpu, result


def main() -> None:
    rng = random.Random(13)
    snapshot, app, calls = facts(rng)
    load_before = os.getloadavg()
    rows = []
    label, wall, cpu, review = timed(
        "Access review of one principal", lambda: analysis.access_review(snapshot, app, calls, 90)
    )
    rows.append((label, wall, cpu, f"{review.allowed_count:,} allowed key actions, {len(calls):,} calls confirmed"))  # type: ignore[attr-defined]
    key = snapshot.keys[0]
    changed = doc(
        ROOT_STATEMENT, {"Sid": "All", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}
    )
    label, wall, cpu, result = timed(
        "Key policy change preview", lambda: preview.preview(snapshot, preview.KeyPolicyChange(key.id, changed))
    )
    rows.append((label, wall, cpu, f"{len(result.gains):,} gains, {len(result.created)} findings created"))  # type: ignore[attr-defined]
    label, wall, cpu, result = timed(
        "Identity policy change preview",
        lambda: preview.preview(
            snapshot,
            preview.IdentityPolicyChange("Full", review.generated_text, principal_arn=app.arn),  # type: ignore[attr-defined]
        ),
    )
    rows.append((label, wall, cpu, f"{len(result.losses):,} keys with losses"))  # type: ignore[attr-defined]
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"Load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"Peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")
    print("| Operation | Wall (s) | CPU (s) | Result |")
    print("| --- | ---: | ---: | --- |")
    for label, wall, cpu, what in rows:
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {what} |")


if __name__ == "__main__":
    main()
