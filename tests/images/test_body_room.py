"""The memory bound under concurrent uploads (dupify.images.bodies.BodyRoom): bodies past the
room wait in arrival order, a body alone may always take the whole room, one that cannot get
room in time is refused with 503 `overloaded` and Retry-After, and no room is ever lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dupify.errors import ApiError
from dupify.images.bodies import BodyRoom, body_size_to_reserve
from support.samples import photo_jpeg


async def test_bodies_past_the_room_wait_their_turn_in_arrival_order() -> None:
    room = BodyRoom(capacity=100, wait_s=5)
    assert await room.reserve(60) == 60
    order: list[str] = []

    async def take(name: str, size: int) -> int:
        held = await room.reserve(size)
        order.append(name)
        return held

    big = asyncio.create_task(take("big", 70))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 10))  # would fit now, but is behind `big`
    await asyncio.sleep(0.01)
    assert order == [] and room.held == 60
    room.release(60)
    assert await big == 70 and await small == 10
    assert order == ["big", "small"] and room.held == 80
    room.release(70)
    room.release(10)
    assert room.held == 0


async def test_a_body_alone_may_take_the_whole_room_whatever_its_size() -> None:
    room = BodyRoom(capacity=100, wait_s=0)
    assert await room.reserve(500) == 100  # capped at the room: alone, it always fits
    room.release(100)
    assert room.held == 0


async def test_no_room_in_time_is_a_503_with_retry_after_and_loses_no_room() -> None:
    room = BodyRoom(capacity=100, wait_s=0.05)
    held = await room.reserve(90)
    with pytest.raises(ApiError) as refused:
        await room.reserve(20)
    assert refused.value.code == "overloaded" and refused.value.status == 503
    assert int(refused.value.headers["Retry-After"]) >= 1
    room.release(held)
    assert room.held == 0
    assert await room.reserve(100) == 100  # the refused one left nothing behind


async def test_a_caller_that_goes_away_while_waiting_leaves_the_line() -> None:
    room = BodyRoom(capacity=100, wait_s=5)
    held = await room.reserve(100)
    gone = asyncio.create_task(room.reserve(50))
    after = asyncio.create_task(room.reserve(50))
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    room.release(held)
    assert await after == 50 and room.held == 50


async def test_hold_gives_the_room_back_when_the_request_ends() -> None:
    room = BodyRoom(capacity=1100, wait_s=0)
    finishers: list = []
    await room.hold("300", cap=800, finishers=finishers)
    await room.hold(None, cap=800, finishers=finishers)  # undeclared: the cap
    assert room.held == 1100
    for finish in finishers:
        finish()
    assert room.held == 0


def test_the_size_reserved_is_the_declared_length_or_the_cap() -> None:
    assert body_size_to_reserve("1234", 5000) == 1234
    assert body_size_to_reserve(None, 5000) == 5000
    assert body_size_to_reserve("nonsense", 5000) == 5000
    assert body_size_to_reserve("6000", 5000) == 0  # refused unread, never kept


async def test_every_api_request_gives_its_body_room_back(api_factory: Any) -> None:
    """Through the app: answered, refused for size, refused as no image, failed auth: the room
    is empty again after each (the request middleware runs the finishers)."""
    async with api_factory(limits={"max_image_bytes": 300_000}) as api:
        key = api.new_key()
        room: BodyRoom = api.app.state.runtime.body_room
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"}
        for body, status in (
            (photo_jpeg(size=(256, 256)), 200),
            (photo_jpeg(quality=100) * 4, 413),
            (b"not an image at all", 422),
        ):
            response = await api.client.post("/v1/embeddings", content=body, headers=headers)
            assert response.status_code == status, response.text
            assert room.held == 0
        response = await api.client.post(
            "/v1/embeddings", content=b"x", headers={"Content-Type": "image/jpeg"}
        )
        assert response.status_code == 401 and room.held == 0


async def test_a_body_that_needs_no_room_never_waits_in_line() -> None:
    room = BodyRoom(capacity=100, wait_s=0)
    await room.reserve(100)
    assert await room.reserve(0) == 0  # e.g. declared over the cap: refused unread at once
