"""The centre in its own process(es) for ``bench_sync``, and what the benchmark measures it by.

Batch latencies and answers per POST (``TimedSession``), CPU seconds of the centre's processes
and the PostgreSQL backends from ``/proc``, percentiles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import free_port
from footfall.cloud_sync.sender import BATCHES_PATH


class TimedSession(requests.Session):
    """A real session that notes how long each batch POST took and how it ended."""

    def __init__(self) -> None:
        super().__init__()
        self.latencies: list[float] = []
        self.outcomes: dict[str, int] = {}

    def request(self, method: str, url: str, *args: Any, **kw: Any) -> requests.Response:  # type: ignore[override]
        if not url.endswith(BATCHES_PATH):
            return super().request(method, url, *args, **kw)
        start = time.perf_counter()
        try:
            resp = super().request(method, url, *args, **kw)
        except requests.RequestException as exc:
            name = type(exc).__name__
            self.outcomes[name] = self.outcomes.get(name, 0) + 1
            raise
        self.latencies.append(time.perf_counter() - start)
        self.outcomes[str(resp.status_code)] = self.outcomes.get(str(resp.status_code), 0) + 1
        return resp


# -- the centre in its own process(es) ----------------------------------------------------------


class Centre:
    def __init__(self, db_url: str, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "footfall", "central", "serve", "--db", db_url, "--port", str(self.port)]
        cmd += ["--log-level", "warning"] + (["--workers", str(workers)] if workers != 1 else [])
        self.proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the central service did not start")
            time.sleep(0.1)
        time.sleep(0.5 if workers == 1 else 2.0)  # every worker up

    def pids(self) -> list[int]:
        out = [self.proc.pid]
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    kids = [int(k) for k in (task / "children").read_text().split()]
                except OSError:
                    continue
                out += kids
                todo += kids
        return out

    def cpu(self) -> float:
        return sum(proc_cpu(p) for p in self.pids())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_cpu(db: Database) -> float:
    """CPU seconds used so far by the PostgreSQL server on this host: the postmaster with its
    reaped children (backends that have exited) plus its live children. Includes whatever
    else uses that server meanwhile."""
    with db.connect() as conn:
        backend = conn.scalar("SELECT pg_backend_pid()")
    try:
        postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return float("nan")  # not on this host
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{postmaster}/task").glob("*"):
        try:
            total += sum(proc_cpu(int(k)) for k in (task / "children").read_text().split())
        except OSError:
            continue
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]
