"""The real thing with an operator's CLIP-like model: `dupify serve` with DUPIFY_MODELS_FILE,
the official `openai` client asking it for text embeddings unchanged; and a bad declaration
stopping `dupify serve` at start-up with the field named."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI

from support.onnx_builders import COLOURS, DIMENSIONS, solid_embedding, write_exports
from support.servers import BIN, Server, clean_env, free_port, start_server, stop_server

KEY = re.compile(r"dpy_[0-9A-Za-z]{38}")


@pytest.fixture(scope="module")
def clip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    exports = write_exports(tmp_path_factory.mktemp("exports"))
    workdir = tmp_path_factory.mktemp("server")
    server = start_server(workdir, clean_env(DUPIFY_MODELS_FILE=str(exports.models_file)))
    yield server
    if server.process.poll() is None:
        stop_server(server)


def test_the_openai_client_gets_text_embeddings_unchanged(clip_server: Server) -> None:
    key = KEY.findall("".join(clip_server.output))[0]
    client = OpenAI(api_key=key, base_url=clip_server.base_url + "/v1")
    texts = ["red", "a photo of a green.", "a dog"]
    default = client.embeddings.create(model="tiny-clip", input=texts)  # base64 on the wire
    floats = client.embeddings.create(model="tiny-clip", input=texts, encoding_format="float")
    assert [item.index for item in default.data] == [0, 1, 2]
    for left, right in zip(default.data, floats.data, strict=True):
        assert len(left.embedding) == DIMENSIONS
        assert abs(np.linalg.norm(left.embedding) - 1) < 1e-5
        np.testing.assert_allclose(left.embedding, right.embedding, atol=1e-6)
    green = solid_embedding(COLOURS["green"])
    np.testing.assert_allclose(floats.data[1].embedding, green / np.linalg.norm(green), atol=1e-5)
    assert default.usage.prompt_tokens > 0
    models = {model.id: model for model in client.models.list().data}
    assert {"dupify-visual-1", "tiny-clip", "tiny-clip-one", "tiny-dino"} <= set(models)
    ready = httpx.get(clip_server.base_url + "/readyz", timeout=30)
    assert ready.status_code == 200, ready.text  # the warm-up ran every tower


def test_a_bad_declaration_stops_start_up_naming_the_field(tmp_path: Path) -> None:
    exports = write_exports(tmp_path / "exports")
    text = exports.models_file.read_text().replace("dimensions = 6", "dimensions = 7")
    exports.models_file.write_text(text)
    env = clean_env(DUPIFY_MODELS_FILE=str(exports.models_file))
    subprocess.run([str(BIN / "dupify"), "migrate"], cwd=tmp_path, env=env, check=True)
    served = subprocess.run(
        [str(BIN / "dupify"), "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert served.returncode != 0
    output = served.stdout + served.stderr
    assert "models[2].dimensions (tiny-dino): declared 7" in output, output


def test_a_models_file_that_does_not_parse_stops_serve_before_the_server_starts(
    tmp_path: Path,
) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text('[[models]]\nid = "x"\nversion = "1"\ntask = "image"\n')
    env = clean_env(DUPIFY_MODELS_FILE=str(models_file))
    served = subprocess.run(
        [str(BIN / "dupify"), "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode == 2
    assert "models[0]" in served.stderr and "Traceback" not in served.stderr, served.stderr
