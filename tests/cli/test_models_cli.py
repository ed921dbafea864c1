"""`dupify models list|check|add|pull` on small exports built here; `pull` against a server on
127.0.0.1 that serves files the way a model hub does (`<repo>/resolve/<revision>/<path>`, large
files redirected elsewhere with their sha256 in `X-Linked-Etag`, small ones with their git blob
id as the ETag)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dupify.cli.main import app
from support.onnx_builders import text_model, tokenizer_json, vision_model, write_exports

REPO = "tiny-org/tiny-clip-onnx"


def run(*args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250", **env})
    return result.exit_code, result.output


class FakeHub:
    """Files by repository path; `corrupt` names files served with other bytes than their
    announced checksum."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.corrupt: set[str] = set()
        self.requests: list[str] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                hub.requests.append(self.path)
                prefix = f"/{REPO}/resolve/main/"
                if self.path.startswith("/cdn/"):
                    name = self.path.removeprefix("/cdn/")
                    return self._send(name, {})
                if not self.path.startswith(prefix) or self.path[len(prefix) :] not in hub.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                name = self.path[len(prefix) :]
                data = hub.files[name]
                if name.endswith(".onnx"):  # LFS: a redirect carrying the sha256
                    self.send_response(302)
                    self.send_header("Location", f"/cdn/{name}")
                    self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                return self._send(name, {"ETag": f'"{blob}"'})

            def _send(self, name: str, headers: dict[str, str]) -> None:
                data = hub.files[name]
                if name in hub.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 1])
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture
def hub() -> Iterator[tuple[FakeHub, str]]:
    fake = FakeHub(
        {
            "onnx/vision_model.onnx": vision_model(),
            "onnx/text_model.onnx": text_model(),
            "tokenizer.json": tokenizer_json().encode(),
        }
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_list_and_check_show_loaded_and_failing_models(tmp_path: Path) -> None:
    exports = write_exports(tmp_path / "exports")
    broken = exports.models_file.read_text() + (
        '\n[[models]]\nid = "broken"\nversion = "1"\ntask = "image"\n'
        f'image_model = "{tmp_path}/missing.onnx"\ndimensions = 4\n'
    )
    models_file = tmp_path / "models.toml"
    models_file.write_text(broken)
    code, output = run("models", "list", "--json", DUPIFY_MODELS_FILE=str(models_file))
    assert code == 1, output  # one model fails: the exit status says so
    rows = {row["id"]: row for row in json.loads(output)}
    assert rows["dupify-visual-1"]["status"] == "loaded"
    assert (
        rows["tiny-clip"]["status"] == "loaded" and rows["tiny-clip"]["modalities"] == "image,text"
    )
    assert rows["broken"]["status"].startswith("failing: models[3].image_model (broken): file not")

    code, output = run(
        "models", "check", "tiny-clip", "--seconds", "0.05", "--json",
        DUPIFY_MODELS_FILE=str(exports.models_file),
    )  # fmt: skip
    assert code == 0, output
    report = json.loads(output)
    assert (report["dimensions"], report["unit_norm"]) == (8, 1.0)
    assert report["images_per_second"] > 0 and report["texts_per_second"] > 0
    assert -1 <= report["cosine_image_caption"] <= 1
    assert report["providers"] == ["CPUExecutionProvider"]
    code, output = run("models", "check", "nope", DUPIFY_MODELS_FILE=str(exports.models_file))
    assert code == 1 and "no model 'nope'" in output


def test_pull_then_add_then_check(tmp_path: Path, hub: tuple[FakeHub, str]) -> None:
    fake, url = hub
    models_file = tmp_path / "models" / "models.toml"
    env = {"DUPIFY_MODELS_FILE": str(models_file)}
    files = ["--file", "onnx/vision_model.onnx", "--file", "onnx/text_model.onnx"]
    code, output = run(
        "models", "pull", REPO, *files, "--file", "tokenizer.json", "--hub", url, **env
    )
    assert code == 0, output
    folder = tmp_path / "models" / "tiny-org__tiny-clip-onnx"
    for name, data in fake.files.items():
        assert (folder / name).read_bytes() == data
        assert hashlib.sha256(data).hexdigest() in output
    assert not list(folder.rglob("*.part"))

    code, output = run(
        "models", "add", "pulled-clip", "--task", "clip", "--dimensions", "8",
        "--image-model", str(folder / "onnx/vision_model.onnx"),
        "--text-model", str(folder / "onnx/text_model.onnx"),
        "--tokenizer", str(folder / "tokenizer.json"),
        "--size", "16", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", **env,
    )  # fmt: skip
    assert code == 0, output
    declared = models_file.read_text()
    assert 'id = "pulled-clip"' in declared and "[models.sha256]" in declared
    assert hashlib.sha256(fake.files["tokenizer.json"]).hexdigest() in declared
    code, output = run("models", "check", "pulled-clip", "--seconds", "0.05", "--json", **env)
    assert code == 0 and json.loads(output)["dimensions"] == 8, output

    # A declaration that does not match its model is refused, and the file stays as it was.
    code, output = run(
        "models", "add", "wrong", "--task", "image", "--dimensions", "5", "--size", "16",
        "--image-model", str(folder / "onnx/vision_model.onnx"), **env,
    )  # fmt: skip
    assert code == 1 and "models[1].dimensions (wrong): declared 5" in output, output
    assert models_file.read_text() == declared
    code, output = run(
        "models", "add", "pulled-clip", "--task", "image", "--dimensions", "8",
        "--image-model", str(folder / "onnx/vision_model.onnx"), **env,
    )  # fmt: skip
    assert code == 1 and "declared twice" in output


@pytest.mark.parametrize("corrupt", ["onnx/text_model.onnx", "tokenizer.json"])
def test_a_file_that_does_not_match_its_checksum_is_not_kept(
    tmp_path: Path, hub: tuple[FakeHub, str], corrupt: str
) -> None:
    fake, url = hub
    fake.corrupt.add(corrupt)
    files = ["--file", "onnx/vision_model.onnx", "--file", corrupt]
    code, output = run("models", "pull", REPO, *files, "--hub", url, "--dest", str(tmp_path))
    assert code == 1 and "does not match the hub's" in output, output
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


def test_pull_refusals(tmp_path: Path, hub: tuple[FakeHub, str]) -> None:
    fake, url = hub
    dest = ["--dest", str(tmp_path)]
    code, output = run("models", "pull", REPO, "--file", "nope.onnx", "--hub", url, *dest)
    assert code == 1 and "answered 404" in output
    wrong = "0" * 64
    code, output = run(
        "models", "pull", REPO, "--file", "tokenizer.json", "--hub", url,
        "--sha256", f"tokenizer.json={wrong}", *dest,
    )  # fmt: skip
    assert code == 1 and f"does not match --sha256 {wrong}" in output
    code, output = run("models", "pull", REPO, "--file", "tokenizer.json", *dest, HF_ENDPOINT="")
    assert code == 1 and "no hub" in output
    code, output = run("models", "pull", REPO, "--file", "../x", "--hub", url, *dest)
    assert code == 1 and "not a path inside" in output
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []
    assert all(request.startswith(("/tiny-org/", "/cdn/")) for request in fake.requests)
