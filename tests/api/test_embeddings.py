"""POST /v1/embeddings: the three input forms, formats, options and the OpenAI shape."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from support.api import Api
from support.samples import photo_jpeg


def _vector(payload: dict[str, object], index: int = 0) -> np.ndarray:
    data = payload["data"]
    assert isinstance(data, list)
    return np.asarray(data[index]["embedding"], dtype=np.float32)


async def test_three_input_forms_give_the_same_unit_vector(api: Api) -> None:
    key = api.new_key()
    jpeg = photo_jpeg("chelsea")
    auth = {"Authorization": f"Bearer {key}"}
    as_json = await api.client.post(
        "/v1/embeddings",
        json={"input": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()},
        headers=auth,
    )
    as_multipart = await api.client.post(
        "/v1/embeddings", files={"file": ("cat.jpg", jpeg, "image/jpeg")}, headers=auth
    )
    as_raw = await api.client.post(
        "/v1/embeddings", content=jpeg, headers={**auth, "Content-Type": "image/jpeg"}
    )
    vectors = []
    # The same bytes in another form are the same image: the result cache answers them.
    for response, cached in ((as_json, 0), (as_multipart, 1), (as_raw, 1)):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list" and body["model"] == "dupify-visual-1"
        assert body["usage"] == {
            "prompt_tokens": 0,
            "total_tokens": 0,
            "images": 1,
            "cached_images": cached,
        }
        assert response.headers["X-Cache"] == ("hit" if cached else "miss")
        assert response.headers["X-Request-Id"].startswith("req_")
        assert float(response.headers["X-Processing-Ms"]) >= 0
        vector = _vector(body)
        assert vector.shape == (1024,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
        vectors.append(vector)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)


async def test_batch_keeps_order_and_bare_base64_works(api: Api) -> None:
    key = api.new_key()
    images = [photo_jpeg(name) for name in ("chelsea", "coffee", "astronaut")]
    response = await api.client.post(
        "/v1/embeddings",
        json={"input": [base64.b64encode(image).decode() for image in images]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    single = await api.client.post(
        "/v1/embeddings",
        json={"input": base64.b64encode(images[1]).decode()},
        headers={"Authorization": f"Bearer {key}"},
    )
    np.testing.assert_allclose(_vector(body, 1), _vector(single.json()), atol=1e-5)


async def test_base64_encoding_and_dimensions(api: Api) -> None:
    key = api.new_key()
    image = base64.b64encode(photo_jpeg("coffee")).decode()
    auth = {"Authorization": f"Bearer {key}"}
    floats = await api.client.post("/v1/embeddings", json={"input": image}, headers=auth)
    packed = await api.client.post(
        "/v1/embeddings", json={"input": image, "encoding_format": "base64"}, headers=auth
    )
    decoded = np.frombuffer(base64.b64decode(packed.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, _vector(floats.json()), atol=1e-7)

    short = await api.client.post(
        "/v1/embeddings", json={"input": image, "dimensions": 256}, headers=auth
    )
    vector = _vector(short.json())
    assert vector.shape == (256,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    full = _vector(floats.json())[:256]
    np.testing.assert_allclose(vector, full / np.linalg.norm(full), atol=1e-5)

    too_many = await api.client.post(
        "/v1/embeddings", json={"input": image, "dimensions": 4096}, headers=auth
    )
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "dimensions"


async def test_options_as_form_fields_and_query(api: Api) -> None:
    key = api.new_key()
    jpeg = photo_jpeg("camera")
    auth = {"Authorization": f"Bearer {key}"}
    form = await api.client.post(
        "/v1/embeddings",
        files={"file": ("a.jpg", jpeg, "image/jpeg")},
        data={"encoding_format": "base64", "dimensions": "64"},
        headers=auth,
    )
    assert form.status_code == 200, form.text
    assert len(base64.b64decode(form.json()["data"][0]["embedding"])) == 64 * 4
    query = await api.client.post(
        "/v1/embeddings?model=nope",
        content=jpeg,
        headers={**auth, "Content-Type": "image/jpeg"},
    )
    assert query.status_code == 404
    assert query.json()["error"]["code"] == "model_not_found"


async def test_models_listing(api: Api) -> None:
    key = api.new_key()
    response = await api.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    visual = next(card for card in body["data"] if card["id"] == "dupify-visual-1")
    assert visual["object"] == "model"
    assert visual["dimensions"] == 1024 and visual["task"] == "embedding"
    assert visual["version"]


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {
        "database": "ok",
        "inference": "ok",
        "cache": "ok (embedded)",
        "rate_limits": "ok (embedded)",
    }
