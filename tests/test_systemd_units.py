"""The systemd units under deploy/systemd/: each ExecStart, as written, with
the unit's environment (Environment=, then its EnvironmentFile= in order)
substituted as systemd does, starts a working process: the web server
answers /, the worker and beat come up, and each stops cleanly on the unit's
KillSignal within its TimeoutStopSec.

The units assume kmsweb installed in /opt/kmsweb with its virtualenv in
/opt/kmsweb/.venv and its environment in /etc/kmsweb/: the test points
those at this checkout, its interpreter and a temporary environment file
(SQLite and the embedded broker in a temporary var/).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings

from tests.gunicorn_nodes import free_port

UNITS = Path(settings.BASE_DIR) / "deploy" / "systemd"
INSTALL = "/opt/kmsweb"
START_SECONDS = 120
METRICS_TOKEN = "systemd-unit-test-metrics-token"  # noqa: S105 - the test node's own


def parse_unit(path: Path) -> dict[str, list[str]]:
    """``{"Section.Key": [values in order]}``; continuation lines joined, comments skipped."""
    entries: dict[str, list[str]] = {}
    section = ""
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and line[0] not in "#;":
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("\"'")
    return env


def unit_environment(unit: dict[str, list[str]], files: dict[str, Path]) -> dict[str, str]:
    """Environment= assignments, then each EnvironmentFile= (``-`` prefix: optional), later ones winning."""
    env: dict[str, str] = {}
    for line in unit.get("Service.Environment", []):
        for assignment in shlex.split(line):
            key, _, value = assignment.partition("=")
            env[key] = value
    for name in unit.get("Service.EnvironmentFile", []):
        optional = name.startswith("-")
        path = files.get(name.lstrip("-"))
        if path is None or not path.exists():
            assert optional, f"EnvironmentFile {name} is required and the test has no stand-in for it"
            continue
        env.update(read_env_file(path))
    return env


def expand(command: str, env: dict[str, str]) -> list[str]:
    """systemd's ExecStart substitution: ``${VAR}`` inside a word, ``$VAR`` alone splits into words."""
    argv: list[str] = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            argv += env.get(whole[1], "").split()
            continue
        argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m[1], ""), word))
    return argv


def _wait(condition: Callable[[], bool], what: str, log: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not condition():
        assert process.poll() is None, f"{what}: the process exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} within {START_SECONDS} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)  # polling a process's start, not waiting for a clock


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a loopback URL of ours
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The stand-ins for /etc/kmsweb/*.env: a temporary var/ with secrets and a migrated SQLite database."""
    base = tmp_path_factory.mktemp("node")
    var = base / "var"
    plain = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env_file = base / "kmsweb.env"
    env_file.write_text(
        f"KMSWEB_VAR_DIR={var}\nDJANGO_ALLOWED_HOSTS=127.0.0.1,localhost\nKMSWEB_LOG_LEVEL=INFO\n"
        f"KMSWEB_METRICS_TOKEN={METRICS_TOKEN}\n",
        encoding="utf-8",
    )
    first = {**plain, **read_env_file(env_file)}
    manage = str(settings.BASE_DIR / "manage.py")
    for argv in ([sys.executable, "-m", "kmsweb.devsecrets", str(var)], [sys.executable, manage, "migrate"]):
        done = subprocess.run(argv, cwd=settings.BASE_DIR, env=first, capture_output=True, timeout=300)  # noqa: S603
        assert done.returncode == 0, done.stderr[-3000:]
    # The embedded broker's folders (production sets REDIS_URL; `manage.py serve` makes these too).
    for folder in ("queue", "processed", "control"):
        (var / "broker" / folder).mkdir(parents=True, exist_ok=True)
    port = free_port()
    (base / "web.env").write_text(f"KMSWEB_BIND=127.0.0.1:{port}\nKMSWEB_WEB_WORKERS=2\n", encoding="utf-8")
    (base / "worker.env").write_text("KMSWEB_WORKER_CONCURRENCY=1\n", encoding="utf-8")
    return {
        "/etc/kmsweb/kmsweb.env": env_file,
        "/etc/kmsweb/web.env": base / "web.env",
        "/etc/kmsweb/worker.env": base / "worker.env",
        "base": base,
    }


def _start(
    name: str, node: dict[str, Path]
) -> tuple[subprocess.Popen[bytes], Path, dict[str, str], dict[str, list[str]]]:
    unit = parse_unit(UNITS / name)
    assert unit["Service.WorkingDirectory"] == [INSTALL]
    env = unit_environment(unit, node)
    for name in unit.get("Service.RuntimeDirectory", []):
        # systemd makes /run/NAME, empty, at each start: a new folder stands in for it.
        fresh = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=node["base"]))
        env = {key: value.replace(f"/run/{name}", str(fresh)) for key, value in env.items()}
    [command] = unit["Service.ExecStart"]
    argv = expand(command, env)
    assert argv[0] == f"{INSTALL}/.venv/bin/python"
    argv[0] = sys.executable
    log = node["base"] / f"{name}.log"
    plain = {n: os.environ[n] for n in ("PATH", "HOME", "LANG") if n in os.environ}
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - the unit's own command line
            argv, cwd=settings.BASE_DIR, env={**plain, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    return process, log, env, unit


def _stop(process: subprocess.Popen[bytes], unit: dict[str, list[str]], log: Path) -> None:
    signum = getattr(signal, unit["Service.KillSignal"][0])
    process.send_signal(signum)
    try:
        code = process.wait(timeout=float(unit["Service.TimeoutStopSec"][0]))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"did not stop on {signum.name}:\n{log.read_text()[-3000:]}") from None
    assert code == 0, f"exited {code} on {signum.name}:\n{log.read_text()[-3000:]}"


def test_the_units_are_the_three_processes() -> None:
    assert sorted(p.name for p in UNITS.glob("*.service")) == [
        "kmsweb-beat.service",
        "kmsweb-web.service",
        "kmsweb-worker.service",
    ]
    for path in UNITS.glob("*.service"):
        unit = parse_unit(path)
        assert unit["Service.Restart"] == ["always"], path.name
        assert unit["Install.WantedBy"] == ["multi-user.target"], path.name
        assert "/etc/kmsweb/kmsweb.env" in unit["Service.EnvironmentFile"], path.name


def _calls_counted(base: str) -> float:
    """``kmsweb_api_requests_total`` for unsigned ListKeys calls, as one scrape of /metrics reports it."""
    scrape = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    with urllib.request.urlopen(scrape, timeout=10) as response:  # noqa: S310 - a loopback URL of ours
        text = response.read().decode()
    pattern = r'^kmsweb_api_requests_total\{operation="ListKeys",outcome="client_error"\} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def test_the_web_unit_serves_and_stops_cleanly(node: dict[str, Path]) -> None:
    process, log, env, unit = _start("kmsweb-web.service", node)
    try:
        base = f"http://{env['KMSWEB_BIND']}"
        _wait(lambda: _answers(f"{base}/"), "the web server answering /", log, process)
        # Unsigned KMS calls, each on a new connection, spread over the unit's
        # two workers: every scrape, whichever worker answers it, counts them all.
        calls = 24
        for _ in range(calls):
            call = urllib.request.Request(
                f"{base}/", data=b"{}", headers={"X-Amz-Target": "TrentService.ListKeys"}, method="POST"
            )
            try:
                urllib.request.urlopen(call, timeout=10).close()  # noqa: S310 - a loopback URL of ours
            except urllib.error.HTTPError as refused:
                assert refused.code == 403
                assert b"MissingAuthenticationToken" in refused.read()
        assert [_calls_counted(base) for _ in range(6)] == [calls] * 6
    finally:
        _stop(process, unit, log)
    # Threaded workers, as `manage.py serve` runs them: a process's read-only
    # calls in flight together share their audit commit.
    assert "Using worker: gthread" in log.read_text(), log.read_text()[-3000:]


@pytest.mark.parametrize(
    ("name", "ready"),
    [
        ("kmsweb-worker.service", re.compile(r"celery@\S+ ready\.")),
        ("kmsweb-beat.service", re.compile("beat: Starting")),
    ],
)
def test_the_worker_and_beat_units_start_and_stop_cleanly(
    node: dict[str, Path], name: str, ready: re.Pattern[str]
) -> None:
    process, log, _, unit = _start(name, node)
    try:
        _wait(lambda: bool(ready.search(log.read_text(errors="replace"))), f"{name} ready", log, process)
    finally:
        _stop(process, unit, log)
