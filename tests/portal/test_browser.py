"""The whole portal journey in a real browser (Debian's Chromium driven by Playwright) against a
real server process that sends its mail to a real SMTP sink:

sign up -> open the emailed link -> sign in -> create a key -> call /v1/embeddings over HTTP ->
see the call in the logs and on the dashboard -> download the export -> delete the account ->
the key is refused at once. Throughout, the browser holds no cookie but the session and the CSRF
cookie, loads nothing from another origin, and logs no console error (a CSP violation would be).
"""

from __future__ import annotations

import json
import re
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


def test_signup_to_first_call_to_deletion_in_a_real_browser(
    server: Server, module_sink: SmtpSink, browser: Browser
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    journey = Journey(context.new_page(), server.base_url)
    page = journey.page
    email = "browser-user@example.com"

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

    # Create a key; it is shown once, with a copy button (served script, so it is visible).
    journey.goto("/keys")
    page.get_by_label("Key name").fill("browser test")
    journey.submit("Create key")
    key = page.locator("#new-key").inner_text().strip()
    assert re.fullmatch(r"dpy_[0-9A-Za-z]{38}", key)
    copy = page.get_by_role("button", name="Copy the key")
    assert copy.is_visible()
    copy.click()
    page.wait_for_function("document.getElementById('copy-status').textContent.length > 0")
    page.screenshot(path=str(ARTIFACTS / "portal-keys.png"), full_page=True)

    # Call the API with it over HTTP, from outside the browser.
    response = httpx.post(
        server.base_url + "/v1/embeddings",
        content=photo_jpeg("coffee", size=(96, 96)),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]

    # The call shows in the logs and in the dashboard's figures.
    journey.goto("/logs")
    table = page.locator("#log-table").inner_text()
    assert "POST /v1/embeddings" in table and request_id in table and "200" in table
    journey.goto("/dashboard")
    assert page.locator("#total-requests").inner_text() == "1"
    assert page.locator("#total-images").inner_text() == "1"
    assert page.locator("#quota-used").inner_text() == "1"
    assert page.locator("#error-rate").inner_text().startswith("0.0")
    assert page.locator("svg rect").count() == 60
    page.screenshot(path=str(ARTIFACTS / "portal-dashboard.png"), full_page=True)

    # Keyboard first: the first Tab lands on the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # Phone width: nothing wider than the screen on the busiest pages.
    page.set_viewport_size({"width": 375, "height": 812})
    for path in ("/keys", "/logs", "/account", "/privacy", "/dashboard"):
        journey.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
    page.screenshot(path=str(ARTIFACTS / "portal-dashboard-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    # The playground: an upload analysed in the page, with the same two cookies.
    journey.goto("/playground")
    page.get_by_label("First image").set_input_files(
        files=[{"name": "coffee.jpg", "mimeType": "image/jpeg", "buffer": photo_jpeg("coffee")}]
    )
    journey.submit("Analyse")
    assert page.get_by_text("Labels").first.is_visible()

    # Download the export: it holds the account and the request.
    journey.goto("/account")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download the export (JSON)").click()
    download = download_info.value
    exported = json.loads(Path(download.path()).read_text())
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
    assert (ARTIFACTS / "portal-keys.png").stat().st_size > 0
    assert (ARTIFACTS / "portal-dashboard.png").stat().st_size > 0
