"""POST /v1/compare and /v1/duplicates over HTTP, on real photos and their altered copies."""

from __future__ import annotations

import base64

import pytest

from support.api import Api
from support.samples import altered_copies, encode, in_screenshot, sample_photo, sample_photos

NEAR_COPIES = ("resized_50", "cropped_80", "jpeg_q30", "watermarked")
NAMES_IN_FRAME = ("astronaut", "coffee")  # their framed pages: cosine 0.50, over near_duplicate


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def compare(api: Api, key: str, a: bytes, b: bytes) -> dict:
    response = await api.client.post(
        "/v1/compare", json={"a": b64(a), "b": b64(b)}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def chelsea_copies() -> dict[str, bytes]:
    return altered_copies(sample_photo("chelsea"))


@pytest.mark.parametrize("copy", NEAR_COPIES)
async def test_altered_copies_are_near_duplicates(
    api: Api, chelsea_copies: dict[str, bytes], copy: str
) -> None:
    key = api.new_key()
    body = await compare(api, key, chelsea_copies["png"], chelsea_copies[copy])
    assert (body["verdict"], body["tier"]) == ("near_duplicate", "descriptor"), body
    assert body["model"] == "dupify-copy-1"
    assert set(body["hash_distance"]) == {"phash", "dhash"}
    assert body["thresholds"]
    assert body["usage"] == {"images": 2, "cached_images": 0}


async def test_the_same_pixels_in_png_and_lossless_webp_are_exact_duplicates(
    api: Api, chelsea_copies: dict[str, bytes]
) -> None:
    key = api.new_key()
    body = await compare(api, key, chelsea_copies["png"], chelsea_copies["webp_lossless"])
    assert (body["verdict"], body["tier"]) == ("exact_duplicate", "exact_pixels")
    assert body["hash_distance"] == {"phash": 0, "dhash": 0}
    assert body["similarity"] == pytest.approx(1.0, abs=1e-4)


async def test_two_different_photos_are_different(api: Api) -> None:
    key = api.new_key()
    body = await compare(
        api, key, encode(sample_photo("chelsea")), encode(sample_photo("rocket"), "JPEG")
    )
    assert (body["verdict"], body["tier"]) == ("different", "descriptor")
    assert body["similarity"] < body["thresholds"]["near_duplicate"]


async def test_compare_takes_multipart_parts_a_and_b(
    api: Api, chelsea_copies: dict[str, bytes]
) -> None:
    key = api.new_key()
    response = await api.client.post(
        "/v1/compare",
        files=[
            ("a", ("a.png", chelsea_copies["png"], "image/png")),
            ("b", ("b.jpg", chelsea_copies["jpeg_q30"], "image/jpeg")),
        ],
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["verdict"] == "near_duplicate"


async def test_compare_refuses_a_bad_image_and_a_raw_body_clearly(api: Api) -> None:
    key = api.new_key()
    headers = {"Authorization": f"Bearer {key}"}
    bad = await api.client.post(
        "/v1/compare",
        json={"a": b64(encode(sample_photo("coffee"))), "b": b64(b"GIF89a broken")},
        headers=headers,
    )
    assert bad.status_code == 422
    assert (bad.json()["error"]["code"], bad.json()["error"]["param"]) == ("invalid_image", "b")
    raw = await api.client.post(
        "/v1/compare",
        content=encode(sample_photo("coffee")),
        headers={**headers, "Content-Type": "image/png"},
    )
    assert raw.status_code == 400
    assert raw.json()["error"]["code"] == "invalid_request"
    missing = await api.client.post("/v1/compare", json={"a": "aGk="}, headers=headers)
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "b"


def duplicates_batch() -> tuple[list[bytes], list[set[int]]]:
    """10 photos, each followed by 2 altered copies; and the groups a correct answer holds."""
    images: list[bytes] = []
    expected: list[set[int]] = []
    for index, (_, rgb) in enumerate(sample_photos(10)):
        copies = altered_copies(rgb)
        chosen = (*NEAR_COPIES, "webp_lossless")[index % 5], NEAR_COPIES[(index + 1) % 4]
        start = len(images)
        images.extend([encode(rgb, "JPEG", quality=92), copies[chosen[0]], copies[chosen[1]]])
        expected.append({start, start + 1, start + 2})
    return images, expected


async def test_duplicates_finds_exactly_the_ten_groups(api: Api) -> None:
    key = api.new_key()
    images, expected = duplicates_batch()
    response = await api.client.post(
        "/v1/duplicates",
        json={"input": [b64(image) for image in images]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    groups = [set(group["indices"]) for group in body["groups"]]
    assert len(groups) == 10
    assert sorted(map(sorted, groups)) == sorted(map(sorted, expected))
    assert {group["verdict"] for group in body["groups"]} <= {"exact_duplicate", "near_duplicate"}
    tiers = {"exact_bytes", "exact_pixels", "perceptual_hash", "descriptor"}
    assert all(group["tier"] in tiers for group in body["groups"])
    assert body["usage"]["images"] == 30


async def test_duplicates_counts_its_images(api: Api) -> None:
    key = api.new_key()
    headers = {"Authorization": f"Bearer {key}"}
    one = await api.client.post("/v1/duplicates", json={"input": ["aGk="]}, headers=headers)
    assert one.status_code == 400
    assert one.json()["error"]["code"] == "invalid_request"
    many = await api.client.post("/v1/duplicates", json={"input": ["aGk="] * 65}, headers=headers)
    assert many.status_code == 400
    assert many.json()["error"]["code"] == "too_many_images"


async def test_fingerprints_are_cached_per_account(
    api: Api, chelsea_copies: dict[str, bytes]
) -> None:
    first_key, second_key = api.new_key(), api.new_key()
    a, b = chelsea_copies["png"], chelsea_copies["jpeg_q30"]
    for key, expected in ((first_key, "miss"), (first_key, "hit"), (second_key, "miss")):
        response = await api.client.post(
            "/v1/compare",
            json={"a": b64(a), "b": b64(b)},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.headers["X-Cache"] == expected
        assert response.json()["verdict"] == "near_duplicate"


async def test_different_photos_in_one_frame_stay_apart_through_the_cache(api: Api) -> None:
    """The shared-frame check reads the cell descriptors, which the fingerprint cache keeps:
    the cached answer is the fresh one."""
    key = api.new_key()
    a, b = (encode(in_screenshot(sample_photo(n)), "JPEG", quality=90) for n in NAMES_IN_FRAME)
    answers = []
    for expected in ("miss", "hit"):
        response = await api.client.post(
            "/v1/compare",
            json={"a": b64(a), "b": b64(b)},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.headers["X-Cache"] == expected
        answers.append(response.json())
    fresh, cached = answers
    assert fresh["verdict"] in ("similar", "different"), fresh
    assert fresh["similarity"] >= fresh["thresholds"]["near_duplicate"]  # the frame's doing
    assert fresh["shared_frame"]["content_similarity"] < fresh["similarity"]
    assert 0 < fresh["shared_frame"]["area"] < 1
    assert {k: v for k, v in cached.items() if k != "usage"} == {
        k: v for k, v in fresh.items() if k != "usage"
    }
    groups = await api.client.post(
        "/v1/duplicates",
        json={"input": [b64(a), b64(b)]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert groups.json()["groups"] == []
