"""``convlog serve`` in a real headless Chromium (Debian's ``chromium``, driven by
Playwright through ``executable_path``; no browser is downloaded): each page on the
demo's log, the Shearwater recording and recorded hostile markup, asserted on the DOM,
with no CSP violation or script error in the console, and a screenshot of each saved
to ``test-artifacts/web/`` (or ``$CONVLOG_ARTIFACTS``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.register_assert_rewrite("served")  # before the import: it is also a plugin (below)
from served import HOSTILE, Served, api, artifacts_dir  # noqa: E402  (api: also for the other browser tests)

#: The logs and servers (session-wide fixtures, shared with the HTTP tests).
pytest_plugins = ["served"]

#: Debian's chromium (``.ci/run`` installs it).
CHROMIUM = Path("/usr/bin/chromium")

#: Chromium's flags: headless, no sandbox (root in CI), nothing fetched in the background.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

#: Milliseconds to wait for a page or an element.
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for the module's tests; fails (not skips) when it is missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium package, which .ci/run "
                    f"installs (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@dataclass
class Tab:
    """A browser page and what its console said (messages and uncaught errors)."""

    page: Any
    console: list[str] = field(default_factory=list)

    def sign_in(self, server: Served) -> None:
        """Open the address the server printed (with its token): the browser lands on
        ``/`` without the token in the address bar, holding the cookie."""
        self.page.goto(server.url)
        assert self.page.url == server.base + "/"

    def shot(self, name: str) -> None:
        """Save a full-page screenshot as ``NAME.png`` among the test artifacts."""
        # caret="initial": hiding the caret would make Playwright add an inline style, which the
        # page's CSP refuses (a console error that is not ours).
        self.page.screenshot(path=str(artifacts_dir() / f"{name}.png"), full_page=True, caret="initial")

    def assert_quiet(self) -> None:
        """Nothing in the console: no CSP violation (our assets obey the policy), no
        script error, no failed load."""
        assert self.console == []


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    """A fresh browser context (no cookies) and page, closed after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    opened = Tab(page)
    page.on("console", lambda message: opened.console.append(
        f"{message.type}: {message.text} ({message.location.get('url')})"))
    page.on("pageerror", lambda error: opened.console.append(f"pageerror: {error}"))
    try:
        yield opened
    finally:
        context.close()


def test_the_sessions_page_filters_sorts_and_pages_in_place(tab: Tab, demo_server: Served) -> None:
    """The demo's sessions as rows; typing in the filter swaps the table in place (htmx,
    the address updated); a column header sorts."""
    tab.sign_in(demo_server)
    data = api(demo_server, "/api/sessions")
    rows = tab.page.locator("table.sessions tbody tr")
    assert rows.count() == data["total"]
    assert [a.text_content() for a in tab.page.locator("table.sessions tbody td:first-child a").all()] == [
        row["id"] for row in data["sessions"]]
    assert tab.page.locator("time[title]").first.get_attribute("title").endswith("UTC")
    tab.shot("sessions-demo")
    fork = next(row for row in data["sessions"] if row["branch"])
    tab.page.fill("input[name=q]", fork["branch"])
    tab.page.wait_for_url(f"**q={fork['branch']}**")
    rows.first.wait_for()
    assert [a.text_content() for a in tab.page.locator("table.sessions tbody td:first-child a").all()] == [
        row["id"] for row in api(demo_server, "/api/sessions", q=fork["branch"])["sessions"]]
    tab.page.click("th a:text('session')")
    tab.page.wait_for_selector("th a[aria-sort=ascending]")
    tab.shot("sessions-demo-filtered")
    tab.page.fill("input[name=q]", "")
    tab.page.select_option("select[name=agent]", "gpt")  # a select filters too, keeping the order clicked
    tab.page.wait_for_url("**agent=gpt**sort=id**")
    expected = api(demo_server, "/api/sessions", agent="gpt", sort="id")["sessions"]
    tab.page.wait_for_function(f"document.querySelectorAll('table.sessions tbody tr').length == {len(expected)}")
    assert [a.text_content() for a in tab.page.locator("table.sessions tbody td:first-child a").all()] == [
        row["id"] for row in expected]
    tab.assert_quiet()


def test_a_session_shows_its_messages_and_the_slider_goes_back_in_time(tab: Tab, demo_server: Served) -> None:
    """The demo's session with a crystal: its messages in order with sender, role and
    both times; the crystal; moving the time slider loads the session as of that seq
    (what ``/api/sessions/ID?as_of=SEQ`` says)."""
    tab.sign_in(demo_server)
    rows = api(demo_server, "/api/sessions")["sessions"]
    data = next(d for d in (api(demo_server, f"/api/sessions/{row['id']}") for row in rows) if d["crystals"])
    tab.page.goto(f"{demo_server.base}/sessions/{data['session']}")
    messages = tab.page.locator("li.message")
    assert messages.count() == len(data["messages"])
    assert [t.text_content() for t in tab.page.locator("li.message .text").all()] == [
        m["text"] for m in data["messages"]]
    assert [s.text_content() for s in tab.page.locator("li.message .sender").all()] == [
        m["sender"] or m["role"] or "?" for m in data["messages"]]
    assert tab.page.locator("li.message .time").count() >= len(data["messages"])
    assert tab.page.locator(".crystal .text").first.text_content() == data["crystals"][0]["summary"]
    assert tab.page.locator("section#tree").count() == 1
    tab.shot("session-demo")
    first, last = data["seq_range"]
    middle = next(m["seq"] for m in data["messages"][1:] if first < m["seq"] < last)
    then = api(demo_server, f"/api/sessions/{data['session']}", as_of=middle)
    tab.page.locator("#as-of-seq").fill(str(middle))
    tab.page.wait_for_url(f"**as_of={middle}")
    tab.page.locator("#as-of-notice").wait_for()
    assert tab.page.locator("li.message").count() == len(then["messages"]) < len(data["messages"])
    assert tab.page.locator("#as-of-value").text_content() == str(middle)
    tab.shot("session-demo-as-of")
    tab.assert_quiet()


def test_search_highlights_the_matches(tab: Tab, shearwater_server: Served) -> None:
    """Searching the Shearwater recording for ``redis`` lists what ``/api/search`` says,
    each snippet's matches in ``<mark>``; a hit links to its message."""
    tab.sign_in(shearwater_server)
    tab.page.goto(f"{shearwater_server.base}/search")
    tab.page.fill("input[name=q]", "redis")
    tab.page.press("input[name=q]", "Enter")
    tab.page.wait_for_url("**q=redis**")
    hits = tab.page.locator("li.hit")
    hits.first.wait_for()
    expected = api(shearwater_server, "/api/search", q="redis")
    assert hits.count() == len(expected)
    marks = [m.text_content().lower() for m in tab.page.locator("li.hit mark").all()]
    assert marks and all(m.startswith("redis") for m in marks)
    tab.shot("search-shearwater")
    hits.first.locator(".head a").click()
    tab.page.wait_for_url(f"**/sessions/**#seq-{expected[0]['seq']}")
    assert tab.page.locator(f"#seq-{expected[0]['seq']}").count() == 1
    tab.assert_quiet()


def test_the_shearwater_sessions_page_by_page(tab: Tab, shearwater_server: Served) -> None:
    """1,239 sessions, 50 a page: "older" swaps in page 2 in place; a session opens with
    its messages."""
    tab.sign_in(shearwater_server)
    total = api(shearwater_server, "/api/sessions")["total"]
    assert tab.page.locator("table.sessions tbody tr").count() == 50
    assert f"page 1 of {-(-total // 50)}" in tab.page.locator("p.count").text_content()
    tab.shot("sessions-shearwater")
    tab.page.click("a[rel=next]")
    tab.page.wait_for_url("**page=2**")
    tab.page.wait_for_selector("text=page 2 of")
    second = api(shearwater_server, "/api/sessions", page=2)["sessions"]
    assert tab.page.locator("table.sessions tbody td:first-child a").first.text_content() == second[0]["id"]
    tab.page.goto(f"{shearwater_server.base}/sessions/handshake_test")
    data = api(shearwater_server, "/api/sessions/handshake_test")
    assert tab.page.locator("li.message").count() == len(data["messages"]) > 0
    assert tab.page.locator("li.message .time:has-text('sent')").count() == len(data["messages"])  # own times
    tab.shot("session-shearwater")
    tab.assert_quiet()


def test_a_script_in_a_message_is_shown_and_never_run(tab: Tab, hostile_server: Served) -> None:
    """Recorded ``<script>``, ``<img onerror>`` and ``<svg onload>`` show as their text on
    the session page and in search; none of them ran (``window.pwned`` stays undefined)
    and none became an element."""
    tab.sign_in(hostile_server)
    tab.page.goto(f"{hostile_server.base}/sessions/xss")
    texts = [t.text_content() for t in tab.page.locator("li.message .text").all()]
    assert texts[:len(HOSTILE)] == list(HOSTILE)
    assert tab.page.locator("li.message img, li.message svg, li.message script").count() == 0
    assert tab.page.evaluate("typeof window.pwned") == "undefined"
    tab.shot("session-hostile")
    tab.page.goto(f"{hostile_server.base}/search?q=pwned")
    assert tab.page.locator("li.hit").count() == len(HOSTILE)
    assert tab.page.locator("li.hit img, li.hit svg, li.hit script").count() == 0
    assert tab.page.evaluate("typeof window.pwned") == "undefined"
    tab.shot("search-hostile")
    tab.assert_quiet()


def test_the_health_page(tab: Tab, demo_server: Served) -> None:
    """No recorder runs on the demo's log: the page says so, with ``status``'s reason."""
    tab.sign_in(demo_server)
    tab.page.goto(f"{demo_server.base}/status")
    assert "not recording" in tab.page.locator("#health-verdict").text_content()
    assert "no recorder is running" in tab.page.locator("ul.problems").text_content()
    tab.shot("health-demo")
    # The page answers 503 (the truth of /health), which Chromium reports as a failed load.
    assert all("503" in line for line in tab.console), tab.console


def test_a_browser_without_the_token_is_told_how_to_get_in(tab: Tab, demo_server: Served) -> None:
    """Without the token the browser gets the page that says where it is; a page on
    another origin cannot read the API (no CORS), and the cookie is not readable by
    script (HttpOnly)."""
    response = tab.page.goto(demo_server.base + "/")
    assert response.status == 401
    assert "needs its access token" in tab.page.locator("h1").text_content()
    tab.shot("locked")
    tab.console.clear()
    tab.sign_in(demo_server)
    assert tab.page.evaluate("document.cookie") == ""
    assert httpx.get(demo_server.base + "/api/sessions").status_code == 401
