"""The servers a run needs: a private redis-server on a free port of 127.0.0.1 (no persistence,
stopped at exit), and the local PostgreSQL when one answers (databases bench_*)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, binary: str = "redis-server") -> None:
        self.binary = shutil.which(binary) or "/usr/bin/redis-server"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return out.split()[2].removeprefix("v=") if out else "?"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_benchmark(port: int, n: int) -> dict[str, dict[str, float]]:
    """redis-benchmark on the same server: one client without pipelining, and pipelined (16)."""
    binary = shutil.which("redis-benchmark")
    if not binary:
        return {}
    out: dict[str, dict[str, float]] = {}
    for label, extra in (("1 client, no pipeline", []), ("1 client, pipeline 16", ["-P", "16"])):
        proc = subprocess.run(
            [
                binary,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-c",
                "1",
                "-n",
                str(n),
                "-t",
                "set,lpush,rpop",
                "--csv",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        rates = {}
        for line in proc.stdout.splitlines()[1:]:
            cells = [c.strip('"') for c in line.split(",")]
            if len(cells) >= 2:
                with contextlib.suppress(ValueError):
                    rates[cells[0]] = float(cells[1])
        out[label] = rates
    return out


PG_CHECK = """
import sys, psycopg
try:
    c = psycopg.connect(host=sys.argv[1], port=sys.argv[2], user=sys.argv[3], dbname="postgres",
                        autocommit=True, connect_timeout=2)
except Exception as e:
    print("down", e); sys.exit(0)
print("up", c.info.server_version)
for name in sys.argv[4:]:
    if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        c.execute(f'CREATE DATABASE "{name}"')
"""


def postgres(python: str, host: str, port: str, user: str, databases: list[str]) -> str | None:
    """The server version when PostgreSQL answers (creating ``databases``), else None."""
    proc = subprocess.run(
        [python, "-c", PG_CHECK, host, port, user, *databases],
        capture_output=True,
        text=True,
        timeout=30,
    )
    words = proc.stdout.split()
    if proc.returncode == 0 and words and words[0] == "up":
        v = int(words[1])
        return f"{v // 10000}.{v % 10000}"
    return None
