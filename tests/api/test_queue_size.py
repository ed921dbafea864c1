"""A request's images enter a model's queue together, so a queue smaller than the largest request
would answer such a request 500: that setting is refused at start-up, naming it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dupify.config import MAX_DUPLICATES_IMAGES, Settings
from support.servers import BIN, clean_env


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_a_queue_smaller_than_the_largest_request_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"DUPIFY_INFERENCE__QUEUE_SIZE .* at least 64,"):
        settings(inference={"queue_size": MAX_DUPLICATES_IMAGES - 1})
    with pytest.raises(ValidationError, match=r"at least 300,.*MAX_IMAGES_EMBEDDINGS = 300"):
        settings(limits={"max_images_embeddings": 300})
    fits = settings(inference={"queue_size": MAX_DUPLICATES_IMAGES})
    assert fits.inference.queue_size == MAX_DUPLICATES_IMAGES


def test_dupify_serve_stops_at_start_up_naming_the_setting(tmp_path: Path) -> None:
    refused = subprocess.run(
        [str(BIN / "dupify"), "serve"],
        cwd=tmp_path,
        env=clean_env(DUPIFY_INFERENCE__QUEUE_SIZE="8"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "DUPIFY_INFERENCE__QUEUE_SIZE" in refused.stderr, refused.stderr
