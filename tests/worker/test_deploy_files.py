"""Issue 12: the container files are checked without building them (no registry of images is
reachable here): pinned base images (never `latest`), a non-root user, a health check, the GPU
wheel replacing the CPU one, models baked in at build time; compose.yaml's services likewise;
and the `worker` and `gpu` extras pinned as constraints.txt pins them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ["deploy/Dockerfile.worker", "deploy/Dockerfile.api"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    return bool(name) and bool(tag) and tag != "latest" and re.search(r"\d", tag) is not None


@pytest.mark.parametrize("name", DOCKERFILES)
def test_each_dockerfile_pins_its_base_runs_unprivileged_and_checks_health(name: str) -> None:
    steps = instructions(ROOT / name)
    bases = [args.split()[0] for word, args in steps if word == "FROM"]
    assert bases and all(pinned(base) for base in bases), bases
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), users
    user_at = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    assert [word for word, _ in steps].index("CMD") > user_at  # the process runs as that user
    assert any(word == "HEALTHCHECK" and "NONE" not in args for word, args in steps)
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "-c constraints.txt" in runs and "ModelRegistry(" in runs  # pinned, models baked in


def test_the_worker_image_is_cuda_with_the_gpu_wheel_instead_of_the_cpu_one() -> None:
    steps = instructions(ROOT / "deploy/Dockerfile.worker")
    [base] = [args for word, args in steps if word == "FROM"]
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    runs = " ".join(args for word, args in steps if word == "RUN")
    uninstall = runs.index("pip uninstall -y onnxruntime onnxruntime-gpu")
    assert runs.index("--no-deps -c constraints.txt onnxruntime-gpu") > uninstall
    assert "CUDAExecutionProvider" in runs
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "DUPIFY_INFERENCE__DEVICE=cuda" in env and "RUNPOD_LOG_LEVEL=INFO" in env
    assert [args for word, args in steps if word == "CMD"] == ['["dupify", "worker"]']


def test_compose_runs_the_api_with_postgresql_and_redis_on_pinned_images() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"api", "postgres", "redis"}
    for name, service in services.items():
        assert pinned(service["image"]), (name, service["image"])
        assert "healthcheck" in service, name
    api = services["api"]
    assert api["build"]["dockerfile"] == "deploy/Dockerfile.api"
    assert api["environment"]["DUPIFY_DATABASE_URL"].startswith("postgresql")
    assert api["environment"]["DUPIFY_REDIS_URL"].startswith("redis://redis:")
    assert set(api["depends_on"]) == {"postgres", "redis"}
    assert all(port.startswith("127.0.0.1:") for port in api["ports"])


def test_the_worker_and_gpu_extras_are_pinned_as_the_constraints_pin_them() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert extras["gpu"] == [f"onnxruntime-gpu=={pins['onnxruntime-gpu']}"]
    assert extras["worker"] == [f"runpod=={pins['runpod']}"]
    assert f"runpod=={pins['runpod']}" in extras["test"]
    assert not any(dep.startswith("onnxruntime-gpu") for dep in project["dependencies"])
