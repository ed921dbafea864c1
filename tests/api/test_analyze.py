"""POST /v1/analyze over HTTP: every feature real, per-image errors, each model once per image."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from support.api import Api
from support.samples import encode, photo_jpeg, sample_photo

ALL_FEATURES = [
    "labels",
    "safety",
    "colors",
    "hashes",
    "quality",
    "metadata",
    "text",
    "faces",
    "embedding",
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def analyze(api: Api, key: str, **payload: object) -> dict:
    response = await api.client.post(
        "/v1/analyze", json=payload, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def label_names(result: dict, top: int = 3) -> list[str]:
    return [entry["label"].lower() for entry in result["labels"][:top]]


async def test_labels_and_safety_on_the_bundled_photos(api: Api) -> None:
    key = api.new_key()
    photos = [photo_jpeg(name) for name in ("chelsea", "coffee", "camera")]
    body = await analyze(api, key, input=[b64(photo) for photo in photos])
    chelsea, coffee, camera = body["results"]
    assert any("cat" in label for label in label_names(chelsea)), chelsea["labels"]
    assert any("espresso" in label or "cup" in label for label in label_names(coffee))
    assert any("tripod" in label or "camera" in label for label in label_names(camera))
    assert [result["safety"]["verdict"] for result in body["results"]] == ["safe"] * 3
    assert body["models"] == {"labels": "imagenet-effnet-lite0@1", "safety": "open-nsfw@1"}
    assert body["usage"] == {"images": 3, "cached_images": 0}


async def test_default_features_have_the_documented_shapes(api: Api) -> None:
    key = api.new_key()
    body = await analyze(api, key, input=b64(photo_jpeg("coffee")))
    [result] = body["results"]
    assert set(result) == {
        "index",
        "labels",
        "safety",
        "colors",
        "hashes",
        "quality",
        "metadata",
    }
    assert result["metadata"] == {
        "width": 600,
        "height": 400,
        "format": "jpeg",
        "mode": "RGB",
        "animated": False,
        "exif_gps_present": False,
    }
    assert len(result["labels"]) == 5
    assert all(0 <= entry["score"] <= 1 for entry in result["labels"])
    assert result["colors"] and abs(sum(c["fraction"] for c in result["colors"]) - 1) < 0.02
    assert all(c["hex"].startswith("#") and len(c["hex"]) == 7 for c in result["colors"])
    hashes = result["hashes"]
    assert len(hashes["sha256"]) == 64 and len(hashes["phash"]) == 16
    assert len(hashes["dhash"]) == 16
    assert all(0 <= value <= 1 for value in result["quality"].values())


async def test_a_bad_image_in_a_batch_gets_its_own_error_and_the_rest_succeed(api: Api) -> None:
    key = api.new_key()
    good = b64(photo_jpeg("chelsea"))
    body = await analyze(
        api, key, input=[good, b64(b"not an image at all"), good], features=["hashes"]
    )
    first, bad, last = body["results"]
    assert bad["index"] == 1 and set(bad) == {"index", "error"}
    assert bad["error"]["code"] == "invalid_image"
    assert bad["error"]["param"] == "input[1]"
    assert bad["error"]["type"] == "invalid_request_error"
    assert bad["error"]["request_id"]
    assert first["hashes"] == last["hashes"]
    assert body["usage"]["images"] == 2  # only processed images count


async def test_every_feature_runs_each_model_exactly_once(api: Api) -> None:
    key = api.new_key()
    photo = np.asarray(Image.fromarray(sample_photo("astronaut")).resize((1000, 1000)))
    backend = api.app.state.runtime.backend
    before = {name: stats.items for name, stats in backend.stats().items()}
    body = await analyze(
        api, key, input=b64(encode(photo, "JPEG", quality=90)), features=ALL_FEATURES
    )
    after = {name: stats.items for name, stats in backend.stats().items()}
    assert {name: after[name] - before[name] for name in after} == {
        "dupify-visual-1": 1,
        "dupify-semantic-1": 1,
        "dupify-copy-1": 0,
    }
    [result] = body["results"]
    assert set(result) == {"index", *ALL_FEATURES}
    assert len(result["embedding"]) == 1024


async def test_the_embedding_feature_is_the_embeddings_endpoint_vector(api: Api) -> None:
    key = api.new_key()
    photo = b64(photo_jpeg("rocket"))
    headers = {"Authorization": f"Bearer {key}"}
    for model in ("dupify-visual-1", "dupify-semantic-1"):
        analysis = await analyze(api, key, input=photo, features=["embedding"], model=model)
        embedded = await api.client.post(
            "/v1/embeddings", json={"input": photo, "model": model}, headers=headers
        )
        expected = np.array(embedded.json()["data"][0]["embedding"])
        actual = np.array(analysis["results"][0]["embedding"])
        assert actual.shape == expected.shape
        assert np.allclose(actual, expected, atol=1e-5)
        assert analysis["models"] == {"embedding": model}


async def test_embedding_and_measures_do_not_depend_on_the_other_features(api: Api) -> None:
    # OCR and faces decode the upload again at a larger side; the models and the pixel
    # measures must still see exactly what they see without them (a 1600 px JPEG, so the
    # small decode goes through JPEG DCT scaling).
    key = api.new_key()
    photo = np.asarray(Image.fromarray(sample_photo("chelsea")).resize((1600, 1200)))
    data = b64(encode(photo, "JPEG", quality=90))
    narrow = await analyze(api, key, input=data, features=["embedding", "hashes", "quality"])
    wide = await analyze(api, key, input=data, features=ALL_FEATURES)
    embedded = await api.client.post(
        "/v1/embeddings", json={"input": data}, headers={"Authorization": f"Bearer {key}"}
    )
    expected = np.array(embedded.json()["data"][0]["embedding"])
    for body in (narrow, wide):
        [result] = body["results"]
        assert np.allclose(result["embedding"], expected, atol=1e-6)
    assert wide["results"][0]["hashes"] == narrow["results"][0]["hashes"]
    assert wide["results"][0]["quality"] == narrow["results"][0]["quality"]


def word_image(word: str) -> bytes:
    image = Image.new("RGB", (640, 240), "white")
    draw = ImageDraw.Draw(image)
    draw.text((60, 60), word, fill="black", font=ImageFont.load_default(size=96))
    return encode(np.asarray(image), "PNG")


async def test_text_reads_a_word_and_faces_finds_the_astronaut(api: Api) -> None:
    key = api.new_key()
    body = await analyze(
        api,
        key,
        input=[b64(word_image("SALE")), b64(photo_jpeg("astronaut"))],
        features=["text", "faces"],
    )
    sign, astronaut = body["results"]
    assert "SALE" in " ".join(line["text"] for line in sign["text"]).upper()
    assert sign["faces"] == []
    [face] = astronaut["faces"]
    x, y, width, height = face["box"]
    # Her face sits around x 170-260, y 60-160 in the 512x512 photo.
    assert x < 215 < x + width and y < 110 < y + height
    assert 0 < face["confidence"] <= 1


async def test_multipart_and_raw_forms_take_features_as_fields(api: Api) -> None:
    key = api.new_key()
    headers = {"Authorization": f"Bearer {key}"}
    photo = photo_jpeg("coffee")
    multipart = await api.client.post(
        "/v1/analyze",
        files=[("file", ("a.jpg", photo, "image/jpeg")), ("file", ("b.jpg", photo, "image/jpeg"))],
        data={"features": "hashes,metadata"},
        headers=headers,
    )
    assert multipart.status_code == 200, multipart.text
    results = multipart.json()["results"]
    assert [set(result) for result in results] == [{"index", "hashes", "metadata"}] * 2
    raw = await api.client.post(
        "/v1/analyze?features=quality",
        content=photo,
        headers={**headers, "Content-Type": "image/jpeg"},
    )
    assert raw.status_code == 200, raw.text
    assert set(raw.json()["results"][0]) == {"index", "quality"}


@pytest.mark.parametrize(
    ("payload", "status", "code", "param"),
    [
        ({"features": ["labels", "horoscope"]}, 400, "invalid_request", "features.1"),
        ({"top_k": 0}, 400, "invalid_request", "top_k"),
        ({"features": []}, 400, "invalid_request", "features"),
        ({"features": "labels,,nope"}, 400, "invalid_request", "features.1"),
        ({"input": {"not": "an image"}}, 400, "invalid_request", "input"),
        ({"features": ["embedding"], "model": "nope"}, 404, "model_not_found", "model"),
        ({"input": ["aGk="] * 17}, 400, "too_many_images", "input"),
        ({"input": []}, 400, "invalid_request", "input"),
    ],
)
async def test_bad_requests_get_their_documented_codes(
    api: Api, payload: dict, status: int, code: str, param: str
) -> None:
    key = api.new_key()
    response = await api.client.post(
        "/v1/analyze",
        json={"input": b64(photo_jpeg("coffee")), **payload},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)


async def test_analyze_needs_the_analyze_scope(api: Api) -> None:
    key = api.new_key(scopes=["embeddings"])
    response = await api.client.post(
        "/v1/analyze",
        json={"input": b64(photo_jpeg("coffee"))},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


async def test_a_repeated_analysis_is_served_from_the_cache_without_the_models(api: Api) -> None:
    key = api.new_key()
    headers = {"Authorization": f"Bearer {key}"}
    backend = api.app.state.runtime.backend
    photo, other = b64(photo_jpeg("coins")), b64(photo_jpeg("moon"))
    first = await api.client.post("/v1/analyze", json={"input": photo}, headers=headers)
    assert first.headers["X-Cache"] == "miss"
    before = {name: stats.items for name, stats in backend.stats().items()}
    second = await api.client.post("/v1/analyze", json={"input": photo}, headers=headers)
    assert second.headers["X-Cache"] == "hit"
    assert {name: stats.items for name, stats in backend.stats().items()} == before
    assert second.json()["results"] == first.json()["results"]
    assert second.json()["usage"] == {"images": 1, "cached_images": 1}
    mixed = await api.client.post("/v1/analyze", json={"input": [photo, other]}, headers=headers)
    assert mixed.headers["X-Cache"] == "partial"
    assert mixed.json()["usage"] == {"images": 2, "cached_images": 1}
    # Other options are another result: not served from this entry.
    narrower = await api.client.post(
        "/v1/analyze", json={"input": photo, "top_k": 2}, headers=headers
    )
    assert narrower.headers["X-Cache"] == "miss"
    assert len(narrower.json()["results"][0]["labels"]) == 2
