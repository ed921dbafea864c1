"""Test helper: a real inference worker subprocess on 127.0.0.1, in either form, started, waited
for, killed and restarted: `dupify worker serve`, or the handler under the RunPod SDK's local API
server (`dupify worker --rp_serve_api`)."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dupify.config import InferenceSettings, RunpodSettings, Settings
from dupify.db import create_db_engine
from dupify.schema.migrate import upgrade
from support.servers import BIN, clean_env, free_port
from support.settings import make_settings

# Plenty for checks about answers; 70 images a month, so a test can run into the quota.
PLANS = {"free": {"requests_per_minute": 10_000, "images_per_month": 70}}

FORMS = ("serve", "runpod-sdk")


@dataclass
class Worker:
    form: str
    port: int
    workdir: Path
    env: dict[str, str]
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.form == "serve":
            return [str(BIN / "dupify"), "worker", "serve", "--port", str(self.port)]
        # `dupify worker` runs `python -m dupify.worker.handler`'s main; the SDK's own flags
        # (runpod/serverless/__init__.py) pass through: --rp_serve_api starts its local FastAPI
        # job server; its host default is "localhost", so 127.0.0.1 is given.
        return [
            str(BIN / "dupify"),
            "worker",
            "--rp_serve_api",
            "--rp_api_host",
            "127.0.0.1",
            "--rp_api_port",
            str(self.port),
        ]

    def start(self) -> None:
        """Start (again, on the same port) and return once it answers."""
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        stream = self.process.stdout
        assert stream is not None

        def read() -> None:
            for line in stream:
                self.output.append(line)

        threading.Thread(target=read, daemon=True).start()
        probe = "/health" if self.form == "serve" else "/openapi.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("worker exited:\n" + "".join(self.output))
            try:
                if httpx.get(self.url + probe, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.kill()
        raise AssertionError("worker did not come up:\n" + "".join(self.output))

    def kill(self) -> None:
        """SIGKILL: the worker dies as a preempted GPU box does, answering nothing more."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


def start_worker(form: str, workdir: Path, **extra_env: str) -> Worker:
    """A worker of `form` in `workdir` on a free port, models on CPU with one thread."""
    worker = Worker(form, free_port(), workdir, clean_env(**extra_env))
    worker.start()
    return worker


def fresh_database(tmp_path: Path, name: str) -> str:
    """A migrated SQLite database of the test's own."""
    url = f"sqlite:///{tmp_path / name}"
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def remote_settings(
    database_url: str, worker: Worker | None, fallback: str = "none", **runpod: Any
) -> Settings:
    """Test settings with DUPIFY_INFERENCE__BACKEND=runpod pointed at `worker`."""
    inference = InferenceSettings(
        backend="runpod",
        fallback=fallback,  # type: ignore[arg-type]
        intra_op_threads=1,
        decode_workers=1,
    )
    options = {"endpoint_url": worker.url if worker else None, "timeout_s": 60, **runpod}
    return make_settings(
        database_url, plans=PLANS, inference=inference, runpod=RunpodSettings(**options)
    )
