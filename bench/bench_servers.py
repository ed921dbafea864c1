"""The servers `make bench` drives: each a process on 127.0.0.1 with its output read all
along, started the same way (uvicorn with httptools, the same worker count) and waited for."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from bench_embeddings import UNLIMITED_PLAN

BENCH = Path(__file__).resolve().parent


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks of a process and its children, read from /proc."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    total = 0
    for each in [pid, *(int(child) for child in found.stdout.split())]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """One server process, its output read all along (a full pipe would block it)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.output: list[str] = []
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.process.stdout is not None
        stream = self.process.stdout
        threading.Thread(target=lambda: self.output.extend(stream), daemon=True).start()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.output))
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    def cpu_ticks(self) -> int:
        """User + system clock ticks of the server and its children (workers, decoders)."""
        return cpu_ticks(self.process.pid)

    def settle(self, timeout_s: float = 30.0) -> None:
        """Wait until the server is idle (no CPU tick in 0.2 s): a wrk run ends with requests
        still in the server (up to one per connection, 16 images each in the batch row), whose
        work must not fall into the next run, of this server or another."""
        deadline = time.monotonic() + timeout_s
        last = self.cpu_ticks()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.cpu_ticks()
            if now - last <= 1:
                return
            last = now

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_plain(module: str, workers: int) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", f"{module}:app", "--app-dir", str(BENCH)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    argv += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
    return Server(argv, dict(os.environ), BENCH, port)


def start_dupify(workdir: Path, workers: int) -> tuple[Server, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUPIFY_")}
    env.update({"COLUMNS": "200", **UNLIMITED_PLAN})
    dupify = str(Path(sys.executable).parent / "dupify")
    subprocess.run([dupify, "migrate"], cwd=workdir, env=env, check=True, capture_output=True)
    argv = [dupify, "serve", "--port", str(port), "--workers", str(workers)]
    server = Server(argv, env, workdir, port)
    for line in server.output:
        for word in line.split():
            if word.startswith("dpy_") and len(word) == 42:
                return server, word
    server.stop()
    raise RuntimeError("no first-start key in the server's output:\n" + "".join(server.output))
