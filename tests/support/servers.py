"""Test helper: a real `dupify migrate && dupify serve` subprocess in a directory, started, waited
for and stopped, with its output kept (and read all along, so a full pipe never blocks it)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any DUPIFY_ setting, one decode worker and one
    inference thread (the machine is shared), plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DUPIFY_")}
    env.update({"DUPIFY_INFERENCE__DECODE_WORKERS": "1", "DUPIFY_INFERENCE__INTRA_OP_THREADS": "1"})
    env.update(extra)
    return env


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    base_url: str
    workdir: Path
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None


def start_server(
    workdir: Path,
    env: dict[str, str],
    *,
    serve_args: Sequence[str] = (),
    tls: ssl.SSLContext | None = None,
) -> Server:
    """Migrate and serve in `workdir`; return once /healthz answers 200. Everything the server
    printed until then is in `output` (the first-start key among it); later lines are appended
    by a reader thread. `tls`: the client context to reach a server given --tls-cert/--tls-key."""
    port = free_port()
    migrate = subprocess.run(
        [str(BIN / "dupify"), "migrate"], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr
    process = subprocess.Popen(
        [str(BIN / "dupify"), "serve", "--port", str(port), *serve_args],
        cwd=workdir,
        env={**env, "COLUMNS": "200"},  # no wrapped lines in what the tests search
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    scheme = "https" if tls else "http"
    server = Server(process, port, f"{scheme}://127.0.0.1:{port}", workdir)
    assert process.stdout is not None
    # Non-blocking while waiting, so the loop can read every line printed before /healthz
    # answers (and so before the caller looks for them) and still poll.
    os.set_blocking(process.stdout.fileno(), False)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            server.output.append(line)
            continue
        if process.poll() is not None:
            raise AssertionError("server exited:\n" + "".join(server.output))
        try:
            health = httpx.get(server.base_url + "/healthz", verify=tls or True, timeout=1)
            if health.status_code == 200:
                _keep_reading(server)
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    process.wait(timeout=30)
    raise AssertionError("server did not come up:\n" + "".join(server.output))


def _keep_reading(server: Server) -> None:
    """From now on a thread reads the server's output (blocking) until it closes; unread, the
    pipe would fill and the server block on its next log line."""
    stream = server.process.stdout
    assert stream is not None
    os.set_blocking(stream.fileno(), True)

    def read_until_closed() -> None:
        for line in stream:
            server.output.append(line)

    server.reader = threading.Thread(target=read_until_closed, daemon=True)
    server.reader.start()


def stop_server(server: Server) -> str:
    """Stop the server as Ctrl-C does (a graceful shutdown) and return everything it printed."""
    server.process.send_signal(signal.SIGINT)
    server.process.wait(timeout=60)
    if server.reader is not None:
        server.reader.join(timeout=30)
    assert server.process.stdout is not None
    server.process.stdout.close()
    return "".join(server.output)


def run_dupify(workdir: Path, env: dict[str, str], *args: str) -> str:
    """`dupify <args>` as its own process beside test servers (their working directory and
    environment, so their database and Redis): its output, once it has succeeded."""
    result = subprocess.run(
        [str(BIN / "dupify"), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def new_account_key(workdir: Path, env: dict[str, str], plan: str = "free") -> tuple[str, str]:
    """A new account on `plan` and a key for it, made with the command line: (email, key)."""
    email = f"user-{secrets.token_hex(4)}@example.com"
    run_dupify(
        workdir, env, "account", "create", "--email", email, "--name", "Test", "--plan", plan
    )
    key = run_dupify(workdir, env, "key", "create", "--account", email).strip().splitlines()[-1]
    return email, key
