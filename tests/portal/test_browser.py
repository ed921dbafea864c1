"""The whole portal journey in a real browser (Debian's Chromium driven by Playwright) against a
real server process that sends its mail to a real SMTP sink:

sign up -> open the emailed link -> sign in -> create a key (a reload makes no second) -> copy
the quick-start snippet and run it (Python with httpx, and JavaScript with node) against the
server -> the playground with two photos (previews and boxes) -> the dashboard by key name, with
charts -> filter the logs and download the CSV -> /docs lists /v1/embeddings -> every page at
1280 px and 390 px (screenshots in test-artifacts/, no sideways scrolling) -> download the export
-> delete the account -> the key is refused at once. Throughout, the browser holds no cookie but
the session and the CSRF cookie, loads nothing from another origin, and logs no console error (a
CSP violation would be).
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from support.samples import photo_jpeg
from support.servers import Server, clean_env, free_port, start_server, stop_server
from support.smtp_sink import SmtpSink, running_sink

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PORTAL_COOKIES = {"dupify_session", "dupify_csrf"}
PASSWORD = "a long browser password"
LINK = re.compile(r"http://\S+/verify-email/\S+")


PAGES = {
    "home": "/",
    "dashboard": "/dashboard",
    "keys": "/keys",
    "logs": "/logs",
    "playground": "/playground",
    "account": "/account",
    "privacy": "/privacy",
    "privacy-changes": "/privacy/changes",
    "docs": "/docs",
}
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}


def _environment(smtp_url: str) -> dict[str, str]:
    return clean_env(DUPIFY_SMTP_URL=smtp_url, DUPIFY_MAIL__POLL_INTERVAL_S="0.5")


@pytest.fixture(scope="module")
def module_sink() -> Iterator[SmtpSink]:
    """The SMTP sink for this module's one server (the shared `sink` lives for one test)."""
    with running_sink(SmtpSink(port=free_port())) as started:
        yield started


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, module_sink: SmtpSink) -> Iterator[Server]:
    started = start_server(tmp_path_factory.mktemp("portal-server"), _environment(module_sink.url))
    yield started
    stop_server(started)


def _emailed_link(sink: SmtpSink, address: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in sink.to(address):
            found = LINK.search(message.body)
            if found:
                return found.group(0)
        time.sleep(0.2)
    raise AssertionError(f"no verification email reached the SMTP sink for {address}")


class Journey:
    """The page plus the checks made after every step."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.cookie_names_seen: set[str] = set()
        self.foreign_requests: list[str] = []
        self.console_errors: list[str] = []
        page.on("request", self._on_request)
        page.on("console", self._on_console)
        page.on("dialog", lambda dialog: dialog.accept())

    def _on_request(self, request: object) -> None:
        url: str = getattr(request, "url", "")
        if not url.startswith(self.base_url) and not url.startswith(("data:", "blob:")):
            self.foreign_requests.append(url)

    def _on_console(self, message: object) -> None:
        text: str = getattr(message, "text", "")
        # A page answered 4xx on purpose (a refused form) logs "Failed to load resource";
        # anything else, such as a Content-Security-Policy refusal, is a fault.
        if getattr(message, "type", "") == "error" and not text.startswith("Failed to load"):
            self.console_errors.append(text)

    def cookies(self) -> set[str]:
        names = {cookie["name"] for cookie in self.page.context.cookies()}
        self.cookie_names_seen |= names
        assert names <= PORTAL_COOKIES, names
        return names

    def goto(self, path: str) -> None:
        response = self.page.goto(self.base_url + path)
        assert response is not None and response.ok, (path, response and response.status)
        self.cookies()

    def submit(self, button_name: str) -> None:
        self.page.get_by_role("button", name=button_name).click()
        self.page.wait_for_load_state()
        self.cookies()


def _run_snippet(page: Page, tab: str, copy_label: str, workdir: Path, command: list[str]) -> str:
    """Pick the snippet's tab, press its copy button, and run what the clipboard holds in
    `workdir` (where photo.jpg lies) with `command` + the file; its output."""
    page.get_by_role("tab", name=tab).first.click()
    page.get_by_role("button", name=copy_label).click()
    code = page.evaluate("navigator.clipboard.readText()")
    script = workdir / ("snippet.mjs" if command[0] == "node" else "snippet.py")
    script.write_text(code)
    ran = subprocess.run(
        [*command, str(script)], cwd=workdir, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, (code, ran.stdout, ran.stderr)
    return ran.stdout


def _every_page_at_both_widths(journey: Journey) -> None:
    """Screenshots of every page at 1280 and 390 px (dark mode too, for two); at 390 px no page
    is wider than the screen."""
    page = journey.page
    for width_name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        for name, path in PAGES.items():
            journey.goto(path)
            if name == "docs":
                page.locator(".opblock-summary-path").first.wait_for(timeout=20_000)
            wide = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            assert wide, (path, width)
            page.screenshot(path=str(ARTIFACTS / f"{name}-{width_name}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(color_scheme="dark")
    for name in ("dashboard", "keys"):
        journey.goto(PAGES[name])
        page.screenshot(path=str(ARTIFACTS / f"{name}-desktop-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")


def test_signup_to_first_call_to_deletion_in_a_real_browser(
    server: Server, module_sink: SmtpSink, browser: Browser, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
    journey = Journey(context.new_page(), server.base_url)
    page = journey.page
    email = "browser-user@example.com"

    # The pages for visitors, at both widths (no sideways scrolling on a phone).
    for width_name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        for name in ("signup", "login", "reset-password"):
            journey.goto(f"/{name}")
            wide = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            assert wide, (name, width)
            page.screenshot(path=str(ARTIFACTS / f"{name}-{width_name}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    # Sign up: refused without the age confirmation, accepted with it.
    journey.goto("/signup")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Name").fill("Browser User")
    page.get_by_label("Password").fill(PASSWORD)
    journey.submit("Create account")
    assert page.get_by_text("You must confirm that you are 18 or older").first.is_visible()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("I am 18 or older").check()
    journey.submit("Create account")
    assert "/login" in page.url and "Check your inbox" in page.content()

    # Verify by the link that reached the SMTP sink, then sign in.
    link = _emailed_link(module_sink, email)
    assert link.startswith(server.base_url)
    page.goto(link)
    assert "Your email address is confirmed" in page.content()
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    journey.submit("Sign in")
    assert page.url.endswith("/dashboard")
    assert journey.cookies() == PORTAL_COOKIES
    # The empty dashboard shows the quick start.
    assert page.locator("#quickstart-title").is_visible()
    page.screenshot(path=str(ARTIFACTS / "dashboard-empty-desktop.png"), full_page=True)

    # Create a key: post/redirect/get, shown once with copy buttons; a reload makes no second.
    journey.goto("/keys")
    page.get_by_label("Key name").fill("browser test")
    journey.submit("Create key")
    assert "/keys?reveal=" in page.url
    key = page.locator("#new-key").inner_text().strip()
    assert re.fullmatch(r"dpy_[0-9A-Za-z]{38}", key)
    page.get_by_role("button", name="Copy the key").click()
    page.wait_for_function("document.getElementById('copy-status').textContent.length > 0")
    assert page.evaluate("navigator.clipboard.readText()") == key
    page.screenshot(path=str(ARTIFACTS / "keys-new-key-desktop.png"), full_page=True)

    # Copy the Python (httpx) and JavaScript snippets and run them against the live server.
    (tmp_path / "photo.jpg").write_bytes(photo_jpeg("coffee", size=(96, 96)))
    printed = _run_snippet(
        page,
        "Python (httpx)",
        "Copy the Python (httpx) snippet for embeddings",
        tmp_path,
        [sys.executable],
    )
    assert printed.startswith("[") and printed.count(",") == 3  # the vector's first four
    printed = _run_snippet(
        page,
        "JavaScript (fetch)",
        "Copy the JavaScript (fetch) snippet for embeddings",
        tmp_path,
        ["node"],
    )
    assert printed.startswith("200")

    page.reload()
    journey.cookies()
    assert page.locator("#new-key").count() == 0 and page.locator("#key-spent").is_visible()
    assert page.locator("#key-table tbody tr").count() == 1

    # The calls show in the logs, named by the key's name, and on the dashboard.
    journey.goto("/logs")
    table = page.locator("#log-table").inner_text()
    assert table.count("POST /v1/embeddings") == 2 and "browser test" in table
    assert "key_" not in table
    journey.goto("/dashboard")
    assert page.locator("#total-requests").inner_text() == "2"
    assert page.locator("#quota-used").inner_text() == "2"
    assert "browser test" in page.locator("#by-key").inner_text()
    for chart in ("#chart-requests", "#chart-errors", "#chart-latency"):
        assert page.locator(f"{chart} svg").is_visible()
    # A day's value shows on keyboard focus.
    today_bar = page.locator("#chart-requests .pt").nth(29)
    today_bar.focus()
    assert today_bar.locator(".tip").is_visible()
    assert (today_bar.get_attribute("aria-label") or "").endswith("2 requests")
    for days in ("7", "90"):
        page.get_by_role("link", name=f"{days} days").click()
        page.wait_for_load_state()
        assert page.locator("#total-requests").inner_text() == "2"

    # Keyboard first: the first Tab lands on the skip link, which moves focus to the content.
    journey.goto("/dashboard")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    # The playground: two photos, previews drawn locally, boxes over them, the verdict.
    journey.goto("/playground")
    page.get_by_label("First image", exact=True).set_input_files(
        files=[
            {"name": "astronaut.jpg", "mimeType": "image/jpeg", "buffer": photo_jpeg("astronaut")}
        ]
    )
    page.get_by_label("Second image (optional, to compare)").set_input_files(
        files=[{"name": "coffee.jpg", "mimeType": "image/jpeg", "buffer": photo_jpeg("coffee")}]
    )
    # The previews are drawn from the local files (a canvas each, nothing sent yet).
    page.locator("#preview-a canvas").wait_for(state="visible")
    page.locator("#preview-b canvas").wait_for(state="visible")
    page.get_by_role("button", name="Analyse").click()
    page.locator("#verdict").wait_for(timeout=120_000)
    page.wait_for_function("Number(document.querySelector('#preview-a canvas').dataset.boxes) > 0")
    assert page.locator("#verdict-tier").inner_text().startswith("Decided by tier")
    assert page.locator(".labels li").count() > 0 and page.locator(".palette li").count() > 0
    assert "@astronaut.jpg" in page.locator("#playground-curl").inner_text()
    page.get_by_role("button", name="Copy as curl").click()
    assert "/v1/compare" in page.evaluate("navigator.clipboard.readText()")
    page.screenshot(path=str(ARTIFACTS / "playground-results-desktop.png"), full_page=True)

    # Filter the logs by key and status, then download what is filtered as CSV.
    journey.goto("/logs")
    page.get_by_label("Key", exact=True).select_option(label="browser test")
    page.get_by_label("Status", exact=True).select_option("2xx")
    journey.submit("Filter")
    assert page.locator("#log-count").inner_text().startswith("2 requests")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert len(rows) == 2 and {row["key_name"] for row in rows} == {"browser test"}
    request_id = rows[0]["request_id"]

    # The API reference lists /v1/embeddings.
    journey.goto("/docs")
    page.locator(".opblock-summary-path").first.wait_for(timeout=20_000)
    paths = {
        t.replace("\u200b", "") for t in page.locator(".opblock-summary-path").all_inner_texts()
    }
    assert "/v1/embeddings" in paths

    _every_page_at_both_widths(journey)

    # Download the export: it holds the account and the requests.
    journey.goto("/account")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download the export (JSON)").click()
    exported = json.loads(Path(download_info.value.path()).read_text())
    assert exported["account"]["email"] == email
    assert request_id in json.dumps(exported)
    journey.cookies()

    # Delete the account: the key is refused at once, the session is gone.
    page.get_by_label("Current password").last.fill(PASSWORD)
    page.get_by_label("I understand that the deletion is permanent").check()
    journey.submit("Delete my account")
    assert "Your account and everything stored about it were deleted" in page.content()
    refused = httpx.post(
        server.base_url + "/v1/embeddings",
        content=photo_jpeg("coffee", size=(96, 96)),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert refused.status_code == 401
    assert "dupify_session" not in journey.cookies()
    context.close()

    assert journey.cookie_names_seen == PORTAL_COOKIES
    assert journey.foreign_requests == []
    assert journey.console_errors == []
    for name in PAGES:
        for width_name in WIDTHS:
            assert (ARTIFACTS / f"{name}-{width_name}.png").stat().st_size > 0
