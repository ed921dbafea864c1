"""Security events done through the portal write exactly one audit row each (PRIVACY row 13)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select
from sqlalchemy.orm import Session

from dupify.audit.models import AuditEvent
from dupify.keys.models import ApiKey
from support.api import Api
from support.portal import PASSWORD, create_key_via_form, post_form, signed_in_member


def audit_counts(api: Api, account_id: str) -> Counter[str]:
    with Session(api.engine) as db:
        rows = db.scalars(select(AuditEvent.event).where(AuditEvent.account_id == account_id))
        return Counter(rows)


async def test_key_and_session_events_are_audited_once(api: Api) -> None:
    async with await signed_in_member(api) as member:
        form = {"name": "ci", "scope_embeddings": "yes", "expiry": "30"}
        await create_key_via_form(member.client, form)
        with Session(api.engine) as db:
            key_id = db.scalars(
                select(ApiKey.id).where(ApiKey.account_id == member.account_id)
            ).one()
        revoked = await post_form(member.client, "/keys", f"/keys/{key_id}/revoke", {})
        assert revoked.status_code == 303
        again = await post_form(member.client, "/keys", f"/keys/{key_id}/revoke", {})
        assert again.status_code == 303  # revoking twice is one event
    async with api.new_client() as stranger:
        wrong = {"email": member.email, "password": "wrong" + PASSWORD}
        refused = await post_form(stranger, "/login", "/login", wrong)
        assert refused.status_code != 303
    counts = audit_counts(api, member.account_id)
    assert counts["key_created"] == 1
    assert counts["key_revoked"] == 1
    assert counts["login"] == 1
    assert counts["login_failed"] == 1
    with Session(api.engine) as db:
        [created_row] = db.scalars(
            select(AuditEvent).where(
                AuditEvent.event == "key_created", AuditEvent.account_id == member.account_id
            )
        ).all()
        assert (created_row.actor_account_id, created_row.key_id) == (member.account_id, key_id)
