"""`dupify embed` and `dupify dedupe` on a folder: the server's pipeline, the server's answers."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dupify.cli.main import app
from support.api import Api
from support.samples import altered_copies, encode, sample_photos

COPY_KINDS = ("resized_50", "cropped_80", "jpeg_q30", "watermarked", "webp_lossless")
SUFFIX = {"webp_lossless": ".webp"}


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 photos and 2 altered copies of each, spread over nested folders like a user's."""
    root = tmp_path_factory.mktemp("photos")
    for index, (name, rgb) in enumerate(sample_photos(10)):
        folder = root / ("originals" if index % 2 else "misc/deeper")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.jpg").write_bytes(encode(rgb, "JPEG", quality=92))
        copies = altered_copies(rgb)
        for kind in (COPY_KINDS[index % 5], COPY_KINDS[(index + 2) % 5]):
            target = root / "copies" / f"{name}-{kind}{SUFFIX.get(kind, '.jpg')}"
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(copies[kind])
    (root / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    return root


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout


def relative_groups(groups: list[dict], root: Path) -> set[frozenset[str]]:
    return {frozenset(str(Path(path).relative_to(root)) for path in g["paths"]) for g in groups}


async def test_dedupe_finds_the_same_groups_as_the_api(api: Api, photo_folder: Path) -> None:
    code, output = await asyncio.to_thread(run_cli, "dedupe", str(photo_folder), "--json")
    assert code == 0, output
    report = json.loads(output)
    local = relative_groups(report["groups"], photo_folder)
    assert len(local) == 10
    assert report["skipped"] == []

    files = [photo_folder / path for path in report["files"]]
    key = api.new_key()
    response = await api.client.post(
        "/v1/duplicates",
        json={"input": [base64.b64encode(path.read_bytes()).decode() for path in files]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    remote = {
        frozenset(str(files[index].relative_to(photo_folder)) for index in group["indices"])
        for group in response.json()["groups"]
    }
    assert remote == local


async def test_dedupe_prints_a_table_by_default(photo_folder: Path) -> None:
    code, output = await asyncio.to_thread(run_cli, "dedupe", str(photo_folder / "copies"))
    assert code == 0, output
    assert "near_duplicate" in output or "exact_duplicate" in output or "No duplicates" in output


async def test_embed_writes_a_matrix_and_an_index(
    api: Api, photo_folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "vectors"
    code, printed = await asyncio.to_thread(
        run_cli, "embed", str(photo_folder), "--output", str(output)
    )
    assert code == 0, printed
    matrix = np.load(tmp_path / "vectors.npy")
    index = [
        json.loads(line) for line in (tmp_path / "vectors.index.jsonl").read_text().splitlines()
    ]
    assert matrix.shape == (30, 1024) and matrix.dtype == np.float32
    assert [entry["row"] for entry in index] == list(range(30))
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-4)

    first = Path(index[0]["path"])
    key = api.new_key()
    response = await api.client.post(
        "/v1/embeddings",
        json={"input": base64.b64encode(first.read_bytes()).decode()},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert np.allclose(matrix[0], response.json()["data"][0]["embedding"], atol=1e-5)


async def test_embed_skips_undecodable_files_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (folder / "fine.png").write_bytes(encode(sample_photos(1)[0][1]))
    code, printed = await asyncio.to_thread(
        run_cli,
        "embed",
        str(folder),
        "--output",
        str(tmp_path / "out"),
        "--model",
        "dupify-semantic-1",
    )
    assert code == 0, printed
    assert "broken.jpg" in printed and "invalid_image" in printed
    assert np.load(tmp_path / "out.npy").shape == (1, 1280)


async def test_a_missing_path_is_a_clean_error(tmp_path: Path) -> None:
    code, _ = await asyncio.to_thread(run_cli, "dedupe", str(tmp_path / "nowhere"))
    assert code == 2
