"""Chromium (Debian's /usr/bin/chromium, driven by Playwright) against pytest-django's live server.

    from .browser import browser, browsing  # noqa: F401  (pytest fixtures)

    def test_...(browsing, owner):
        page = browsing.page(owner)           # signed in (a session cookie), times in UTC
        page.goto(browsing.url("/"))

Every page a test opens reports its JavaScript errors and console errors (a Content-Security-Policy
violation is one) to `browsing.problems`; the fixture fails the test if any were reported. A test
whose page is meant to get an error status (a 409 shown in place) declares it with
`browsing.expect_status(409)`.

The live server runs in a thread of the test's process, so settings overrides (the `settings`
fixture) apply to it, and it needs data the test committed: browser tests use transactional
databases. Playwright's sync API keeps an event loop running in the test's thread, which makes
Django refuse ORM calls there unless DJANGO_ALLOW_ASYNC_UNSAFE is set (Django's documented escape
hatch; the calls are plain blocking calls, nothing runs concurrently with them in this thread).
"""

import os
from pathlib import Path

import pytest
from django.test import Client
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Wide enough for the calendar and its side panel side by side.
VIEWPORT = {"width": 1440, "height": 900}
# A phone (an iPhone 12 to 14's CSS pixels) and a small laptop.
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1400, "height": 900}
# Headless Chromium shows date and time fields as en-US does (mm/dd/yyyy, a 12-hour clock with AM/PM):
# the keyboard tests type them so.
LOCALE = "en-US"


# Module scope: Playwright's event loop stays in the thread while the browser is open, and another
# module (test_booking_pages.py) starts a Playwright of its own, which cannot run beside it.
@pytest.fixture(scope="module")
def browser():
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Browsing:
    """Browser contexts for one test, the problems their pages reported, and screenshots."""

    def __init__(self, browser, base_url):
        self.browser = browser
        self.base_url = base_url
        self.contexts = []
        self.problems = []
        self.expected = []

    def url(self, path):
        return self.base_url + path

    def context(self, zone="UTC", user=None, zone_cookie=True, viewport=VIEWPORT):
        """A fresh browser (no cookies) in `zone`; signed in as `user` when given. With
        zone_cookie the `tz` cookie is already set, so app.js has no reason to reload the page."""
        context = self.browser.new_context(timezone_id=zone, locale=LOCALE, viewport=viewport)
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        cookies = []
        if zone_cookie:
            cookies.append({"name": "tz", "value": zone, "url": self.base_url})
        if user is not None:
            client = Client()
            client.force_login(user)
            cookies.append({"name": "sessionid", "value": client.cookies["sessionid"].value, "url": self.base_url})
        if cookies:
            context.add_cookies(cookies)
        context.on("page", self.watch)
        return context

    def page(self, user=None, zone="UTC", **kwargs):
        return self.context(zone=zone, user=user, **kwargs).new_page()

    def expect_status(self, status):
        """Chromium logs every 4xx/5xx answer as a console error ("Failed to load resource"); a
        test whose page is meant to get `status` (a 409 the form shows) says so here, and only
        that message is let through."""
        self.expected.append(f"Failed to load resource: the server responded with a status of {status} ")

    def watch(self, page):
        page.on("pageerror", lambda error: self.problems.append(f"{page.url}: uncaught {error}"))
        page.on("console", lambda message: self.console(page, message))

    def console(self, page, message):
        if message.type != "error":
            return
        if any(message.text.startswith(expected) for expected in self.expected):
            return
        self.problems.append(f"{page.url}: console: {message.text}")

    def screenshot(self, page, name):
        """A full-page PNG in $SCREENSHOTS_DIR (when set) for the docs."""
        folder = os.environ.get("SCREENSHOTS_DIR")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(folder) / name), full_page=True)

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsing(browser, live_server):
    session = Browsing(browser, live_server.url)
    try:
        yield session
    finally:
        session.close()
    assert not session.problems, "the pages reported JavaScript or console errors:\n" + "\n".join(session.problems)
