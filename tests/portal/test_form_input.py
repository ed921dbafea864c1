"""Portal forms refuse text PostgreSQL cannot store (NUL, a lone surrogate) with a clear 400,
whatever the form's encoding: urlencoded or multipart (both databases)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dupify.accounts.models import Account
from dupify.portal.context import _unstorable
from support.api import Api
from support.portal import PASSWORD, csrf_of, signed_in_member

BOUNDARY = "dupify-form-test"
# A lone surrogate (U+D800) as some encoders write it (CESU-8 style): not UTF-8.
LONE_SURROGATE = b"\xed\xa0\x80"


def multipart(fields: dict[str, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of plain fields, built by hand so any bytes can go in."""
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (BOUNDARY.encode(), name.encode(), value)
        for name, value in fields.items()
    ]
    body = b"".join(parts) + b"--%s--\r\n" % BOUNDARY.encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


async def post_multipart(
    client: httpx.AsyncClient, action: str, csrf: str, fields: dict[str, bytes]
) -> httpx.Response:
    body, headers = multipart({"csrf_token": csrf.encode(), **fields})
    return await client.post(action, content=body, headers=headers)


@pytest.mark.parametrize(
    ("bad", "said"),
    [(b"\x00", "NUL character"), (LONE_SURROGATE, "could not be read")],
    ids=["nul", "lone-surrogate"],
)
async def test_multipart_forms_with_unstorable_text_are_a_400_not_a_500(
    api: Api, bad: bytes, said: str
) -> None:
    """Multipart forms skipped the NUL check: PostgreSQL answered 500 (`cannot contain NUL`)."""
    password = PASSWORD.encode()
    async with api.new_client() as stranger:
        token = csrf_of((await stranger.get("/signup")).text)
        for action, fields in (
            ("/login", {"email": b"a" + bad + b"@example.com", "password": password}),
            ("/reset-password", {"email": b"a" + bad + b"@example.com"}),
            (
                "/signup",
                {
                    "email": b"n@example.com",
                    "name": b"A" + bad,
                    "password": password,
                    "age_confirmed": b"yes",
                },
            ),
        ):
            refused = await post_multipart(stranger, action, token, fields)
            assert refused.status_code == 400 and said in refused.text, (action, refused.text)
    async with await signed_in_member(api) as member:
        client = member.client
        token = csrf_of((await client.get("/keys")).text)
        for action, fields in (
            ("/keys", {"name": b"a" + bad + b"b", "scope_embeddings": b"yes"}),
            ("/account/profile", {"name": bad}),
        ):
            refused = await post_multipart(client, action, token, fields)
            assert refused.status_code == 400 and said in refused.text, (action, refused.text)
        # The same form without the bad character is accepted: the refusal is about the text.
        named = await post_multipart(
            client, "/keys", token, {"name": b"ab", "scope_embeddings": b"yes"}
        )
        assert named.status_code == 303
        assert "dpy_" in (await client.get(named.headers["location"])).text
    with Session(api.engine) as db:
        assert db.scalar(select(func.count()).select_from(Account)) == 1


def test_text_a_database_cannot_store_is_named() -> None:
    """Whatever reader produced the text (a lone surrogate can come from a decoder that lets
    them through), the one check names what is wrong."""
    assert _unstorable(["fine", "ünïcode ✓"]) is None
    assert _unstorable(["a\x00b"]) == "a NUL character"
    assert _unstorable(["ok", "a\ud800b"]) == "a character that is not valid Unicode"
