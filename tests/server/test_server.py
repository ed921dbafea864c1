"""The real thing: `dupify migrate && dupify serve` in a fresh directory, as `make run` does it,
then HTTP from outside the process, the official OpenAI client, and a graceful stop."""

from __future__ import annotations

import base64
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI

from support.samples import photo_jpeg
from support.servers import BIN, Server, clean_env, start_server, stop_server

KEY = re.compile(r"dpy_[0-9A-Za-z]{38}")


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("fresh-clone")
    server = start_server(workdir, clean_env())
    yield server
    if server.process.poll() is None:
        stop_server(server)


def test_first_start_prints_a_key_that_works_in_all_three_forms(dev_server: Server) -> None:
    keys = set(KEY.findall("".join(dev_server.output)))
    assert len(keys) == 1, "".join(dev_server.output)
    key = keys.pop()
    assert f"{dev_server.base_url}/v1/embeddings" in "".join(dev_server.output)
    jpeg = photo_jpeg("astronaut")
    auth = {"Authorization": f"Bearer {key}"}
    url = dev_server.base_url + "/v1/embeddings"
    responses = [
        httpx.post(url, json={"input": base64.b64encode(jpeg).decode()}, headers=auth, timeout=30),
        httpx.post(url, files={"file": ("a.jpg", jpeg, "image/jpeg")}, headers=auth, timeout=30),
        httpx.post(url, content=jpeg, headers={**auth, "Content-Type": "image/jpeg"}, timeout=30),
    ]
    vectors = []
    for response in responses:
        assert response.status_code == 200, response.text
        vectors.append(np.asarray(response.json()["data"][0]["embedding"]))
    for vector in vectors:
        assert vector.shape == (1024,)
        assert abs(np.linalg.norm(vector) - 1) < 1e-4
        np.testing.assert_allclose(vector, vectors[0], atol=1e-6)
    assert (dev_server.workdir / "dupify.db").exists()


def test_official_openai_client_works_unchanged(dev_server: Server) -> None:
    key = KEY.findall("".join(dev_server.output))[0]
    client = OpenAI(api_key=key, base_url=dev_server.base_url + "/v1")
    uris = [
        "data:image/jpeg;base64," + base64.b64encode(photo_jpeg(name)).decode()
        for name in ("chelsea", "coffee")
    ]
    default = client.embeddings.create(model="dupify-visual-1", input=uris)
    floats = client.embeddings.create(model="dupify-visual-1", input=uris, encoding_format="float")
    assert [item.index for item in default.data] == [0, 1]
    for left, right in zip(default.data, floats.data, strict=True):
        assert len(left.embedding) == 1024
        np.testing.assert_allclose(left.embedding, right.embedding, atol=1e-6)
    models = client.models.list()
    assert "dupify-visual-1" in [model.id for model in models.data]


def test_graceful_stop_keeps_every_log_row(tmp_path: Path) -> None:
    server = start_server(tmp_path, clean_env())
    key = KEY.findall("".join(server.output))[0]
    url = server.base_url + "/v1/embeddings"
    tiny = photo_jpeg("coffee", size=(64, 64))
    sent = 0
    for index in range(12):
        headers = {"Content-Type": "image/jpeg"}
        if index % 3:
            headers["Authorization"] = f"Bearer {key}"
        httpx.post(url, content=tiny, headers=headers, timeout=30)
        sent += 1
    output = stop_server(server)
    # The request log is the table; the server's own log names no client address (PRIVACY.md
    # row 2: no IP), so there is no access-log line per request.
    assert "127.0.0.1:" not in output.replace(server.base_url, "")
    assert "POST /v1/embeddings" not in output
    with sqlite3.connect(tmp_path / "dupify.db") as connection:
        rows = connection.execute("SELECT status, COUNT(*) FROM request_logs GROUP BY status")
        counts = dict(rows.fetchall())
    assert counts == {200: 8, 401: 4}
    assert sum(counts.values()) == sent


def test_second_start_prints_no_key(tmp_path: Path) -> None:
    first = start_server(tmp_path, clean_env())
    stop_server(first)
    second = start_server(tmp_path, clean_env())
    output = stop_server(second)
    assert not KEY.search(output)
    assert "dupify key create" in output


def test_production_needs_a_secret_and_never_prints_keys(tmp_path: Path) -> None:
    refused = subprocess.run(
        [str(BIN / "dupify"), "serve"],
        cwd=tmp_path,
        env=clean_env(DUPIFY_ENV="production"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "DUPIFY_SECRET_KEY" in refused.stderr + refused.stdout
    server = start_server(tmp_path, clean_env(DUPIFY_ENV="production", DUPIFY_SECRET_KEY="s" * 48))
    output = stop_server(server)
    assert not KEY.search(output)
    with sqlite3.connect(tmp_path / "dupify.db") as connection:
        assert connection.execute("SELECT COUNT(*) FROM accounts").fetchone() == (0,)
