"""The playground: the API's analysis and compare verdict, billed and logged like API calls."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.usage.models import RequestLog
from support.api import Api
from support.portal import Member, csrf_of, signed_in_member
from support.samples import photo_jpeg


def resized_copy(jpeg: bytes) -> bytes:
    image = Image.open(io.BytesIO(jpeg))
    smaller = image.resize((image.width * 3 // 4, image.height * 3 // 4))
    out = io.BytesIO()
    smaller.save(out, format="JPEG", quality=80)
    return out.getvalue()


async def upload(member: Member, **files: bytes) -> Any:
    page = await member.client.get("/playground")
    return await member.client.post(
        "/playground",
        data={"csrf_token": csrf_of(page.text)},
        files={name: (f"{name}.jpg", data, "image/jpeg") for name, data in files.items()},
    )


def playground_rows(api: Api, account_id: str) -> list[tuple[str, int, int]]:
    with Session(api.engine) as db:
        rows = db.execute(
            select(RequestLog.endpoint, RequestLog.status, RequestLog.images)
            .where(RequestLog.account_id == account_id)
            .order_by(RequestLog.id)
        )
        return [(row[0], row[1], row[2]) for row in rows]


async def test_one_image_gets_the_apis_analysis_and_is_billed_and_logged(api: Api) -> None:
    async with await signed_in_member(api) as member:
        response = await upload(member, image_a=photo_jpeg("coffee", size=(256, 192)))
        assert response.status_code == 200, response.text
        assert "256 \u00d7 192 JPEG" in response.text
        assert "Labels" in response.text and "Safety" in response.text
        assert re.search(r"<code>#[0-9a-f]{6}</code>", response.text)
        await api.flush_usage()
        assert playground_rows(api, member.account_id) == [("POST /playground", 200, 1)]
        dashboard = await member.client.get("/dashboard")
        assert re.search(r'id="quota-used">1<', dashboard.text)
        logs = await member.client.get("/logs")
        assert "POST /playground" in logs.text


async def test_two_images_get_the_compare_verdict(api: Api) -> None:
    async with await signed_in_member(api) as member:
        original = photo_jpeg("chelsea", size=(320, 240))
        copy = await upload(member, image_a=original, image_b=resized_copy(original))
        assert copy.status_code == 200, copy.text
        assert re.search(r'id="verdict">(near duplicate|exact duplicate)<', copy.text)
        other = await upload(member, image_a=original, image_b=photo_jpeg("astronaut"))
        assert re.search(r'id="verdict">(similar|different)<', other.text)
        await api.flush_usage()
        assert playground_rows(api, member.account_id) == [
            ("POST /playground", 200, 4),
            ("POST /playground", 200, 4),
        ]


async def test_a_bad_image_is_explained_and_not_billed(api: Api) -> None:
    async with await signed_in_member(api) as member:
        response = await upload(member, image_a=b"this is not an image at all")
        assert response.status_code == 200
        assert 'class="error" role="alert"' in response.text
        empty = await upload(member)
        assert empty.status_code == 400 and "Choose an image" in empty.text
        await api.flush_usage()
        assert playground_rows(api, member.account_id) == [("POST /playground", 200, 0)]


async def test_the_quota_applies_to_the_playground(api_factory: Callable[..., Any]) -> None:
    async with api_factory(plans={"free": {"images_per_month": 3}}) as running:
        member = await signed_in_member(running)
        async with member:
            jpeg = photo_jpeg("coffee", size=(64, 64))
            refused = await upload(member, image_a=jpeg, image_b=jpeg)  # 2 + 2 for the compare
            assert refused.status_code == 429
            assert "quota" in refused.text
            assert (await upload(member, image_a=jpeg)).status_code == 200
            await running.flush_usage()
            assert playground_rows(running, member.account_id) == [
                ("POST /playground", 429, 0),
                ("POST /playground", 200, 1),
            ]


async def test_the_playground_needs_a_session_and_a_csrf_token(api: Api) -> None:
    assert (await api.client.get("/playground")).headers["location"].startswith("/login")
    async with await signed_in_member(api) as member:
        response = await member.client.post(
            "/playground", files={"image_a": ("a.jpg", photo_jpeg("coffee"), "image/jpeg")}
        )
        assert response.status_code == 403
