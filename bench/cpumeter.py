"""How much of the machine went to something other than the benchmark.

Driver (wrk), server and PostgreSQL share the machine's cores, and so does
anything else that happens to run (a test suite, a build): that would be
measured as the server being slow.  CpuMeter counts, over one wrk run, the
CPU time of the whole machine (/proc/stat) minus the CPU time of

* wrk (a child of this process: its resource usage once it has exited),
* the server: every process that holds the listening socket of the target
  port (a gunicorn master and all its workers, moto_server, ...),
* PostgreSQL: its background processes and its backends connected to the
  benchmark's database,

and reports the rest as a fraction of the machine ("others"), and the
time the hypervisor gave to other machines ("steal").  Linux only;
elsewhere it reports 0.
"""

from __future__ import annotations

import os
import resource
import time

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_ticks() -> tuple[int, int, int]:
    """(all ticks, ticks not spent in processes, steal ticks) summed over the CPUs.

    Interrupt and softirq time (where loopback networking is mostly counted)
    belong to no process: they are left out of "others".  Steal (time the
    hypervisor gave to another machine) is reported apart.
    """
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return sum(fields[:8]), sum(fields[3:8]), fields[7] if len(fields) > 7 else 0


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle)
                for line in handle:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except OSError:
            continue
    return inodes


def _proc_ticks(pid: str) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        data = handle.read()
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _cmdline(pid: str) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()


def _is_ours_postgres(cmdline: str, dbname: str) -> bool:
    if not cmdline.startswith("postgres"):
        return False
    if not cmdline.startswith("postgres: "):
        return True  # the postmaster
    words = _title_words(cmdline)
    # A backend's title: "postgres: USER DB HOST(PORT) STATE"; other titles are
    # background processes ("walwriter", "checkpointer", ...), shared by all.
    is_backend = len(words) >= 3 and ("(" in words[2] or words[2] == "[local]")
    return not is_backend or words[1] == dbname


def _title_words(cmdline: str) -> list[str]:
    """A PostgreSQL process title's words, after "postgres: " and the cluster name if set ("15/main:")."""
    words = cmdline[len("postgres: ") :].split()
    if words and words[0].endswith(":"):
        words = words[1:]
    return words


def _is_backend_of(cmdline: str, dbname: str) -> bool:
    if not cmdline.startswith("postgres: "):
        return False
    words = _title_words(cmdline)
    return len(words) >= 3 and ("(" in words[2] or words[2] == "[local]") and words[1] == dbname


class CpuMeter:
    def __init__(self, port: int | None, dbname: str = "kmsweb_bench"):
        self.port = port
        self.dbname = dbname
        self.enabled = os.path.exists("/proc/stat")
        # PostgreSQL's processes among those measured (not the server's).
        self._postgres: set[str] = set()

    def _backends(self) -> dict[str, int]:
        """CPU ticks of the PostgreSQL backends connected to the benchmark's database."""
        ticks = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if _is_backend_of(_cmdline(pid), self.dbname):
                    ticks[pid] = _proc_ticks(pid)
            except (OSError, ValueError, IndexError):
                continue
        return ticks

    def _our_processes(self) -> dict[str, int]:
        inodes = {f"socket:[{inode}]" for inode in _listening_inodes(self.port)} if self.port else set()
        ticks = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = _cmdline(pid)
                ours = _is_ours_postgres(cmdline, self.dbname)
                if not ours and inodes:
                    fd_dir = f"/proc/{pid}/fd"
                    for fd in os.listdir(fd_dir):
                        try:
                            if os.readlink(f"{fd_dir}/{fd}") in inodes:
                                ours = True
                                break
                        except OSError:
                            continue
                if ours:
                    ticks[pid] = _proc_ticks(pid)
                    if cmdline.startswith("postgres"):
                        self._postgres.add(pid)
            except (OSError, ValueError, IndexError):
                continue
        return ticks

    @staticmethod
    def _children_ticks() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (usage.ru_utime + usage.ru_stime) * TICKS

    def start(self) -> None:
        if not self.enabled:
            return
        self._procs = self._our_processes()
        self._pg = self._backends()
        self._children = self._children_ticks()
        self._machine = _machine_ticks()
        self._time = time.monotonic()

    def stop(self) -> dict:
        """CPU shares of the machine over the run: {"busy", "measured", "others"} in 0..1."""
        if not self.enabled:
            return {
                "busy": 0.0,
                "measured": 0.0,
                "others": 0.0,
                "steal": 0.0,
                "pg_backend_seconds": 0.0,
                "server_seconds": 0.0,
            }
        total1, idle1, steal1 = _machine_ticks()  # idle here: idle, iowait, irq, softirq, steal
        procs = self._our_processes()
        backends = self._backends()
        pg_ticks = sum(t - self._pg.get(pid, 0) for pid, t in backends.items())
        children = self._children_ticks()
        total = total1 - self._machine[0]
        busy = total - (idle1 - self._machine[1])
        ours = children - self._children
        server = 0
        for pid, ticks in procs.items():
            ours += ticks - self._procs.get(pid, 0)
            if pid not in self._postgres:
                server += ticks - self._procs.get(pid, 0)
        others = max(0.0, busy - ours)
        return {
            "busy": round(busy / total, 3) if total else 0.0,
            "measured": round(min(ours, busy) / total, 3) if total else 0.0,
            "others": round(others / total, 3) if total else 0.0,
            "steal": round((steal1 - self._machine[2]) / total, 3) if total else 0.0,
            # CPU seconds of the benchmark database's backends over the run.
            "pg_backend_seconds": round(pg_ticks / TICKS, 3),
            # CPU seconds of the server's processes (those holding its listening socket).
            "server_seconds": round(server / TICKS, 3),
        }
