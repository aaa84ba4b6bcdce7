"""Start one benchmark configuration the way an operator would serve it.

    python bench/serve.py CONFIG [--port 8900]

runs the server in the foreground (Ctrl-C stops it).  CONFIG is one of:

  floor-parse          (a) floor Django app, parse JSON and answer     gunicorn
  floor-crypto-audit   (b) (a) + AES-256-GCM + one durable INSERT       gunicorn
  moto-server          moto's own server, as users run it              moto_server
  moto-gunicorn        moto's WSGI app                                  gunicorn
  kmsweb               kmsweb on PostgreSQL                             gunicorn

Every gunicorn configuration uses bench/gunicorn.conf.py, so worker count
and class are the same for all of them.  bench/suite.py uses start()/stop()
from here to run them one after the other.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
GUNICORN_CONF = BENCH_DIR / "gunicorn.conf.py"
DEFAULT_PORT = int(os.environ.get("BENCH_PORT", "8900"))
DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/kmsweb_bench")

# Credentials the suite gives kmsweb (made with `manage.py create_access_key`).
KMSWEB_ACCESS_KEY_ID = os.environ.get("BENCH_KMSWEB_ACCESS_KEY_ID", "AKIAKMSWEBBENCH00001")
# The bench admin's dashboard password (git-ignored), made by ensure_bench_password().
BENCH_PASSWORD_FILE = BENCH_DIR / "kmsweb-bench-password.txt"
KMSWEB_SECRET = os.environ.get("BENCH_KMSWEB_SECRET", "kmsweb-bench-secret-not-for-production")


@dataclass
class Config:
    name: str
    title: str
    preset: str  # how bench/run.py gets key id and ciphertext
    server: str  # "gunicorn" or "moto_server"
    app: str = ""  # WSGI app for gunicorn
    cwd: pathlib.Path = REPO_DIR
    pythonpath: str = ""  # extra import path for gunicorn
    env: dict = field(default_factory=dict)
    setup: list = field(default_factory=list)  # commands run before the server starts
    access_key: str = ""
    secret: str = ""

    def command(self, port: int) -> list[str]:
        if self.server == "moto_server":
            script = pathlib.Path(sys.executable).with_name("moto_server")
            exe = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
            return exe + ["-H", "127.0.0.1", "-p", str(port)]
        cmd = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", f"127.0.0.1:{port}"]
        if self.pythonpath:
            cmd += ["--pythonpath", self.pythonpath]
        return cmd + [self.app]

    def display(self, port: int) -> str:
        """The command as written in docs/BENCHMARKS.md (paths relative to the repo)."""
        parts = []
        for part in self.command(port):
            path = pathlib.Path(part)
            if part == sys.executable:
                part = "python"
            elif path.is_absolute() and path.name == "moto_server":
                part = "moto_server"
            elif path.is_absolute():
                try:
                    part = str(path.relative_to(REPO_DIR))
                except ValueError:
                    pass
            parts.append(part)
        return " ".join(parts)

    def available(self) -> tuple[bool, str]:
        if self.name == "kmsweb" and not (self.cwd / "manage.py").exists():
            return False, "kmsweb is not wired yet (no manage.py)"
        return True, ""


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


CONFIGS: dict[str, Config] = {
    "floor-parse": Config(
        name="floor-parse",
        title="(a) floor: parse JSON and answer",
        preset="floor",
        server="gunicorn",
        app="floor.wsgi:application",
        pythonpath=str(BENCH_DIR),
        env={"FLOOR_MODE": "parse", "DJANGO_SETTINGS_MODULE": "floor.settings"},
    ),
    "floor-crypto-audit": Config(
        name="floor-crypto-audit",
        title="(b) floor + AES-256-GCM + audit INSERT",
        preset="floor",
        server="gunicorn",
        app="floor.wsgi:application",
        pythonpath=str(BENCH_DIR),
        env={"FLOOR_MODE": "crypto_audit", "DJANGO_SETTINGS_MODULE": "floor.settings", "DATABASE_URL": DATABASE_URL},
        setup=[python_cmd(str(BENCH_DIR / "floor" / "setup_db.py"), "--truncate")],
    ),
    "moto-server": Config(
        name="moto-server",
        title="moto_server (as users run it)",
        preset="moto",
        server="moto_server",
        access_key="testing",
        secret="testing",
    ),
    "moto-gunicorn": Config(
        name="moto-gunicorn",
        title="moto under gunicorn",
        preset="moto",
        server="gunicorn",
        app="moto_wsgi:application",
        pythonpath=str(BENCH_DIR),
        access_key="testing",
        secret="testing",
    ),
    # ------------------------------------------------------------------ kmsweb
    # kmsweb as an operator runs it: gunicorn on PostgreSQL, DEBUG off, the
    # admin principal from `bootstrap` (its inline kms:* policy authorizes
    # every call through the policy engine), fixed bench credentials. The
    # runner makes the key with CreateKey and the Decrypt ciphertext with Encrypt.
    "kmsweb": Config(
        name="kmsweb",
        title="kmsweb (SigV4 + crypto + audit)",
        preset="generic",
        server="gunicorn",
        app="kmsweb.wsgi:application",
        cwd=REPO_DIR,
        env={
            "DATABASE_URL": DATABASE_URL,
            "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "kmsweb-bench-django-secret-key"),
            # 32 bytes, base64; the bench's own value, not a production key.
            "KMSWEB_ROOT_KEY": os.environ.get("KMSWEB_ROOT_KEY", "a21zd2ViLWJlbmNoLXJvb3Qta2V5LTMyLWJ5dGVzISE="),
            "DJANGO_DEBUG": "false",
            # kmsweb's web workers are threaded, as `manage.py serve` runs
            # them: the audit events of calls in flight together in a
            # process commit together (audit/services/writer.py).
            "BENCH_WORKER_CLASS": os.environ.get("BENCH_KMSWEB_WORKER_CLASS", "gthread"),
            "BENCH_THREADS": os.environ.get("BENCH_KMSWEB_THREADS", "8"),
        },
        setup=[
            python_cmd("manage.py", "migrate", "--noinput"),
            # As the floor's table is emptied before its runs (BENCH_KEEP_AUDIT=1 keeps it).
            python_cmd(str(BENCH_DIR / "kmsweb_audit_reset.py")),
            python_cmd("manage.py", "bootstrap", "--password-file", str(BENCH_PASSWORD_FILE)),
            python_cmd(
                "manage.py",
                "create_access_key",
                "admin",
                "--access-key-id",
                KMSWEB_ACCESS_KEY_ID,
                "--secret",
                KMSWEB_SECRET,
                "--exist-ok",
            ),
        ],
        access_key=KMSWEB_ACCESS_KEY_ID,
        secret=KMSWEB_SECRET,
    ),
}


def config_env(config: Config) -> dict:
    env = dict(os.environ)
    env.update(config.env)
    return env


def ensure_bench_password() -> None:
    """The bench admin's dashboard password (git-ignored), made on first use."""
    if not BENCH_PASSWORD_FILE.exists():
        BENCH_PASSWORD_FILE.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")
        BENCH_PASSWORD_FILE.chmod(0o600)


def run_setup(config: Config, log=None) -> None:
    if config.name == "kmsweb":
        ensure_bench_password()
    for cmd in config.setup:
        done = subprocess.run(cmd, cwd=config.cwd, env=config_env(config), capture_output=True, text=True)
        if log is not None:
            log.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}")
            log.flush()
        if done.returncode != 0:
            # create_access_key may refuse a key that exists from an earlier run:
            # go on, the runner's preflight request tells whether the credentials work.
            print(
                f"warning: {' '.join(cmd[1:])} exited {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}",
                file=sys.stderr,
            )


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(
    config: Config, port: int = DEFAULT_PORT, log_path: pathlib.Path | None = None, ready_timeout: float = 60
) -> subprocess.Popen:
    """Run the setup steps, start the server in its own process group, wait for its port."""
    if port_open(port):
        raise RuntimeError(f"port {port} is already in use")
    log = open(log_path, "a") if log_path else None
    run_setup(config, log)
    proc = subprocess.Popen(
        config.command(port),
        cwd=config.cwd,
        env=config_env(config),
        stdout=log or None,
        stderr=subprocess.STDOUT if log else None,
        start_new_session=True,
    )
    deadline = time.monotonic() + ready_timeout
    while not port_open(port):
        if proc.poll() is not None:
            raise RuntimeError(
                f"{config.name} exited {proc.returncode} before listening" + (f"; see {log_path}" if log_path else "")
            )
        if time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"{config.name} did not listen on {port} within {ready_timeout} s")
        time.sleep(0.2)
    time.sleep(0.5)  # let every worker finish booting
    return proc


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Stop a server started by start(): its own process group only."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", choices=sorted(CONFIGS))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--print-command", action="store_true", help="print the server command and exit")
    args = parser.parse_args(argv)
    config = CONFIGS[args.config]
    if args.print_command:
        env = " ".join(f"{k}={v}" for k, v in config.env.items())
        print(
            f"(cd {config.cwd.relative_to(REPO_DIR) if config.cwd != REPO_DIR else '.'} && "
            f"{env + ' ' if env else ''}{config.display(args.port)})"
        )
        return 0
    ok, reason = config.available()
    if not ok:
        print(reason, file=sys.stderr)
        return 2
    run_setup(config)
    os.chdir(config.cwd)
    command = config.command(args.port)
    print("$ " + config.display(args.port), file=sys.stderr)
    os.execvpe(command[0], command, config_env(config))


if __name__ == "__main__":
    sys.exit(main())
