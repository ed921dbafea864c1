"""/docs in a real browser (Debian's Chromium driven by Playwright) against a real server: Swagger
UI renders every route and calls the API under the page's Content-Security-Policy, with no
violation, no console error and no request to another origin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Request

from support.servers import Server, clean_env, start_server, stop_server

pytestmark = pytest.mark.slow

# Recorded in the page itself: a refusal by the Content-Security-Policy, whatever it refused.
RECORD_VIOLATIONS = """
window.violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(tmp_path_factory.mktemp("docs-server"), clean_env())
    yield started
    stop_server(started)


class DocsPage:
    """/docs open in a fresh browser context, with what the page did wrong recorded."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.page.add_init_script(RECORD_VIOLATIONS)
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self._on_request(request, base_url))
        response = self.page.goto(base_url + "/docs")
        assert response is not None and response.ok
        self.policy = response.headers["content-security-policy"]

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _on_request(self, request: Request, base_url: str) -> None:
        if not request.url.startswith((base_url, "data:")):
            self.foreign.append(request.url)

    def faults(self) -> tuple[list[str], list[str], list[str]]:
        """CSP violations, console errors, requests to another origin: all empty when fine."""
        return self.page.evaluate("window.violations"), self.errors, self.foreign


def test_swagger_ui_starts_under_its_content_security_policy(
    server: Server, browser: Browser
) -> None:
    docs = DocsPage(browser, server.base_url)
    assert "script-src 'self'" in docs.policy and "'unsafe-inline'" not in docs.policy
    # Swagger UI's bundle and our start script ran: the bundle rendered its root.
    docs.page.locator("#swagger-ui .swagger-ui").wait_for()
    docs.page.wait_for_load_state("networkidle")
    assert docs.faults() == ([], [], [])
    docs.context.close()


def test_swagger_ui_renders_every_route_and_tries_one(server: Server, browser: Browser) -> None:
    docs = DocsPage(browser, server.base_url)
    page = docs.page
    page.locator(".opblock-summary-path").first.wait_for(timeout=10_000)
    paths = {
        text.replace("\u200b", "")
        for text in page.locator(".opblock-summary-path").all_inner_texts()
    }
    assert {"/v1/embeddings", "/v1/analyze", "/v1/compare", "/v1/duplicates"} <= paths
    # "Try it out" fetches from this origin, which the policy's connect-src allows.
    page.locator("#operations-operations-healthz_healthz_get").click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    page.locator(".live-responses-table .response-col_status", has_text="200").wait_for()
    assert docs.faults() == ([], [], [])
    docs.context.close()
