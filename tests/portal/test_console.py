"""The developer console: keys made with post/redirect/get and shown once with quick-start
snippets; logs by key name with filters, pages that keep them and a CSV of what is filtered; the
dashboard's ranges, charts and breakdowns; policy versions and /privacy/changes. Both databases."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import String, Text, func, select
from sqlalchemy.orm import Session

from dupify.db import utcnow
from dupify.keys.models import ApiKey
from dupify.portal.charts import Series, chart, nice_step
from dupify.portal.snippets import quick_start
from dupify.privacy.models import PolicyVersion
from dupify.schema.tables import Base
from dupify.usage.models import RequestLog
from support.api import Api
from support.portal import create_key_via_form, post_form, signed_in_member
from support.samples import photo_jpeg

KEY = re.compile(r"dpy_[0-9A-Za-z]{38}")
FORM = {"name": "ci server", "scope_embeddings": "yes", "scope_analyze": "yes", "expiry": "never"}


def key_count(api: Api, account_id: str) -> int:
    with Session(api.engine) as db:
        query = select(func.count()).select_from(ApiKey).where(ApiKey.account_id == account_id)
        return int(db.scalar(query) or 0)


async def test_a_new_key_is_shown_once_after_a_redirect_and_a_reload_makes_no_second(
    api: Api,
) -> None:
    async with await signed_in_member(api) as member:
        created, shown = await create_key_via_form(member.client, FORM)
        (secret,) = set(KEY.findall(shown.text))
        # The quick start has the key filled in, for every language and call.
        for call in ("embeddings", "analyze", "compare"):
            for language in ("curl", "httpx", "fetch"):
                assert f'id="qs-{call}-{language}"' in shown.text
        assert 'id="qs-embeddings-openai"' in shown.text
        assert shown.text.count(secret) >= 8
        # A reload repeats the GET: no key is made and the secret is not shown again.
        location = created.headers["location"]
        assert secret not in location
        reloaded = await member.client.get(location)
        assert reloaded.status_code == 200 and secret not in reloaded.text
        assert "shown only once" in reloaded.text
        assert key_count(api, member.account_id) == 1
        # The secret is nowhere in the database (the reveal row holds an HMAC only).
        with api.engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                columns = [c for c in table.columns if isinstance(c.type, String | Text)]
                for row in connection.execute(select(*columns)) if columns else []:
                    assert not any(isinstance(v, str) and secret[4:] in v for v in row)
        # A fresh ticket is useless in another session, and a tampered one anywhere.
        _, _ = await create_key_via_form(member.client, {**FORM, "name": "second"})
        second = await post_form(member.client, "/keys", "/keys", {**FORM, "name": "third"})
        ticket_path = second.headers["location"]
        async with await signed_in_member(api) as other:
            stolen = await other.client.get(ticket_path)
            assert stolen.status_code == 200 and not KEY.search(stolen.text)
        ticket = parse_qs(urlsplit(ticket_path).query)["reveal"][0]
        tampered = ticket[:-3] + ("AAA" if not ticket.endswith("AAA") else "BBB")
        forged = await member.client.get("/keys", params={"reveal": tampered})
        assert not KEY.search(forged.text)
        # Its owner can still open it (the tampered try did not spend it), once.
        assert KEY.search((await member.client.get(ticket_path)).text)
        assert key_count(api, member.account_id) == 3


def test_every_python_snippet_compiles_and_names_the_key() -> None:
    for key in ("dpy_" + "a" * 38, None):
        for section in quick_start("https://dupify.example", key, "dupify-visual-1"):
            for snippet in section.snippets:
                assert "https://dupify.example/v1" in snippet.code
                assert (key or "DUPIFY_API_KEY") in snippet.code
                if snippet.language.startswith("Python"):
                    compile(snippet.code, snippet.id, "exec")


async def seed_logs(api: Api, account_id: str, key_ids: list[str | None]) -> None:
    now = utcnow()
    with Session(api.engine) as db, db.begin():
        for index in range(60):
            db.add(
                RequestLog(
                    request_id=f"req_seed{index:04d}",
                    created_at=now - timedelta(days=index % 3, minutes=index),
                    account_id=account_id,
                    key_id=key_ids[index % len(key_ids)],
                    endpoint="POST /v1/embeddings" if index % 2 else "POST /v1/analyze",
                    status=200 if index % 4 else 429,
                    error_code=None if index % 4 else "rate_limited",
                    latency_ms=10.0 + index,
                    images=1,
                )
            )


def key_ids_by_name(api: Api, account_id: str) -> dict[str, str]:
    with Session(api.engine) as db:
        rows = db.execute(select(ApiKey.name, ApiKey.id).where(ApiKey.account_id == account_id))
        return {name: key_id for name, key_id in rows}


async def test_logs_name_keys_filter_by_key_keep_filters_on_pages_and_download_csv(
    api: Api,
) -> None:
    async with await signed_in_member(api) as member:
        await create_key_via_form(member.client, {**FORM, "name": "=HYPERLINK(1)"})
        await create_key_via_form(member.client, {**FORM, "name": "laptop"})
        ids = key_ids_by_name(api, member.account_id)
        await seed_logs(api, member.account_id, [ids["laptop"], ids["=HYPERLINK(1)"], None])
        client = member.client
        page = await client.get("/logs")
        assert "laptop" in page.text and "signed in (playground)" in page.text
        assert ids["laptop"] not in page.text.split('id="log-table"', 1)[1]  # names, not ids
        mine = await client.get("/logs", params={"key": ids["laptop"]})
        assert "20 requests" in mine.text and "=HYPERLINK" not in mine.text.split("<tbody>")[1]
        both = await client.get("/logs", params={"key": ids["laptop"], "status": "2xx"})
        assert "15 requests" in both.text
        # Pages keep every filter, and so does the CSV link.
        everything = await client.get("/logs", params={"status": "all"})
        older = re.search(r'href="(/logs\?[^"]+)" rel="next"', everything.text)
        assert older and "page=2" in older.group(1)
        filtered = await client.get(
            "/logs", params={"key": ids["laptop"], "endpoint": "POST /v1/analyze"}
        )
        csv_link = re.search(r'id="csv-link" href="([^"]+)"', filtered.text)
        assert csv_link
        download = await client.get(csv_link.group(1).replace("&amp;", "&"))
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/csv")
        assert "attachment" in download.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(download.text)))
        assert len(rows) == 10 and {row["key_name"] for row in rows} == {"laptop"}
        assert {row["endpoint"] for row in rows} == {"POST /v1/analyze"}
        formula = await client.get("/logs.csv", params={"key": ids["=HYPERLINK(1)"]})
        names = {row["key_name"] for row in csv.DictReader(io.StringIO(formula.text))}
        assert names == {"'=HYPERLINK(1)"}  # a spreadsheet shows it, never runs it
        async with await signed_in_member(api) as other:
            foreign = await other.client.get("/logs.csv", params={"key": ids["laptop"]})
            assert len(list(csv.DictReader(io.StringIO(foreign.text)))) == 0


async def test_dashboard_ranges_breakdowns_and_empty_quick_start(api: Api) -> None:
    async with await signed_in_member(api) as member:
        empty = await member.client.get("/dashboard")
        assert 'id="qs-embeddings-curl"' in empty.text and "DUPIFY_API_KEY" in empty.text
        # An empty chart's axis counts whole numbers: 0, 1, 2, 3, 4.
        axis = re.findall(r'class="axis"[^>]*text-anchor="end">([^<]+)<', empty.text)
        assert axis[:5] == ["0", "1", "2", "3", "4"]
        _, shown = await create_key_via_form(member.client, {**FORM, "name": "mobile app"})
        (secret,) = set(KEY.findall(shown.text))
        for _ in range(2):
            answer = await api.client.post(
                "/v1/embeddings",
                content=photo_jpeg("coffee", size=(64, 64)),
                headers={"Authorization": f"Bearer {secret}", "Content-Type": "image/jpeg"},
            )
            assert answer.status_code == 200
        await seed_logs(api, member.account_id, [None])
        with Session(api.engine) as db, db.begin():
            old = db.scalars(
                select(RequestLog).where(RequestLog.request_id == "req_seed0000")
            ).one()
            old.created_at = utcnow() - timedelta(days=40)
        page = await member.client.get("/dashboard", params={"range": "7"})
        assert 'id="qs-embeddings-curl"' not in page.text
        assert 'aria-current="true">7 days' in page.text
        assert re.search(r'id="total-requests">61<', page.text)
        by_key = page.text.split('id="by-key"', 1)[1].split("</table>", 1)[0]
        assert "mobile app" in by_key and "signed in (playground)" in by_key
        by_endpoint = page.text.split('id="by-endpoint"', 1)[1].split("</table>", 1)[0]
        assert "POST /v1/analyze" in by_endpoint and "POST /v1/embeddings" in by_endpoint
        # The two embeddings requests name their model; seeded rows from before the column
        # (no model) are left out of this breakdown.
        by_model = page.text.split('id="by-model"', 1)[1].split("</table>", 1)[0]
        assert re.search(r"dupify-visual-1</code></td><td>2<", by_model), by_model
        assert page.text.count('class="pt" tabindex="0"') > 7 * 3
        wide = await member.client.get("/dashboard", params={"range": "90"})
        assert re.search(r'id="total-requests">62<', wide.text)
        odd = await member.client.get("/dashboard", params={"range": "12345"})
        assert odd.status_code == 200 and 'aria-current="true">30 days' in odd.text


def test_chart_axes_are_whole_and_every_point_has_a_value() -> None:
    assert [nice_step(top) for top in (0, 3, 4, 7, 19, 101, 4000)] == [1, 1, 1, 2, 5, 50, 1000]
    today = utcnow().date()
    days = [today - timedelta(days=offset) for offset in range(7)][::-1]
    drawn = chart(
        "c", "t", days, [Series("p95", "s1", [None, 5.5, None, 9, 0, None, 12], " ms")], "lines"
    )
    assert [label for _, label in drawn.ticks] == ["0", "5", "10", "15", "20"]
    assert drawn.marks[0].tip == f"{days[1].isoformat()}: 5.5 ms p95"
    assert len(drawn.marks) == 4 and drawn.lines and drawn.lines[0][1].count(",") == 4


async def test_policy_versions_keep_their_text_and_changes_show_the_difference(
    api_factory: object,
) -> None:
    async with api_factory() as first:  # type: ignore[operator]
        page = await first.client.get("/privacy/changes")
        assert page.status_code == 200 and "Version 1" in page.text
    async with api_factory(policy_version=2, usage_log={"retention": timedelta(days=60)}) as second:  # type: ignore[operator]
        changes = await second.client.get("/privacy/changes")
        assert "Version 2" in changes.text and "Changes since version 1" in changes.text
        assert re.search(r"<del class=\"diff\">.*90 days", changes.text)
        assert re.search(r"<ins class=\"diff\">.*60 days", changes.text)
        with Session(second.engine) as db:
            versions = db.scalars(
                select(PolicyVersion.version).order_by(PolicyVersion.version)
            ).all()
            assert versions == [1, 2]
        privacy = await second.client.get("/privacy")
        assert 'href="/privacy/changes"' in privacy.text
