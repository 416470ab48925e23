"""The pages in headless Chromium, driven through chromedriver's W3C WebDriver HTTP API.

Chromium is confined to 127.0.0.1: host names other than 127.0.0.1 do not resolve and every
other address is sent to a proxy that does not exist. Screenshots go to
test-artifacts/screenshots/ for a person to look at.
"""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.support.client import Api, lot
from tests.support.common import free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
TOKEN = "browser-operator-token-0123456789"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
LOCAL = "http://127.0.0.1:"
STAGE_SECONDS = 12  # how long each sandbox batch stays in progress while the browser watches

# the UI does not depend on the database engine; run it on the production one
pytestmark = pytest.mark.parametrize("engine_name", ["postgresql"])


@pytest.fixture(scope="module")
def chromedriver():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)")
    if not os.path.exists(CHROMEDRIVER):
        pytest.skip("chromedriver is not installed (apt-get install chromium-driver)")
    port = free_port()
    process = subprocess.Popen([CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            if requests.get(f"{url}/status", timeout=1).json()["value"]["ready"]:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("chromedriver did not start")
        time.sleep(0.1)
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


class Browser:
    """A few WebDriver commands over plain HTTP."""

    def __init__(self, driver_url: str, profile: Path):
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--window-size=1280,900",
                f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"]
        capabilities = {"alwaysMatch": {"browserName": "chrome", "pageLoadStrategy": "normal",
                                        "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}
        answer = requests.post(f"{driver_url}/session", json={"capabilities": capabilities}, timeout=60).json()
        assert "sessionId" in answer.get("value", {}), answer
        self.base = f"{driver_url}/session/{answer['value']['sessionId']}"

    def command(self, method: str, path: str, payload: dict | None = None):
        answer = requests.request(method, f"{self.base}{path}", json=payload, timeout=60).json()
        value = answer.get("value")
        if isinstance(value, dict) and "error" in value:
            raise AssertionError(f"WebDriver {path}: {value['error']}: {value.get('message', '')[:300]}")
        return value

    def go(self, url: str) -> None:
        assert url.startswith(LOCAL), f"the browser may only load 127.0.0.1, not {url}"
        self.command("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return self.command("GET", "/url")

    def find(self, css: str) -> str:
        found = self.command("POST", "/element", {"using": "css selector", "value": css})
        assert isinstance(found, dict) and ELEMENT in found, f"no element {css}: {found}"
        return found[ELEMENT]

    def type(self, css: str, text: str) -> None:
        self.command("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self.command("POST", f"/element/{self.find(css)}/click", {})

    def run(self, script: str, *args):
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, *args, timeout: float = 15.0):
        """Until the script returns something truthy; returns that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {script}")
            time.sleep(0.2)

    def cell(self, row: str, name: str, attribute: str | None = None):
        """Text (or an attribute) of the element marked data-f=name inside ``row``."""
        return self.run("const el = document.querySelector(arguments[0] + ' [data-f=\"' + arguments[1] + '\"]');"
                        "return arguments[2] ? el.getAttribute(arguments[2]) : el.textContent;", row, name, attribute)

    def resources(self) -> list[str]:
        """The page and everything it loaded."""
        return self.run("return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)];")

    def screenshot(self, name: str, height: int | None = None) -> Path:
        if height:
            self.command("POST", "/window/rect", {"width": 1280, "height": height})
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        path.write_bytes(base64.b64decode(self.command("GET", "/screenshot")))
        return path

    def quit(self) -> None:
        requests.delete(self.base, timeout=30)


def eventually(check, timeout: float) -> None:
    wait_until(check, timeout, "the page to change", interval=0.2)


@pytest.fixture
def browser(chromedriver, tmp_path):
    session = Browser(chromedriver, tmp_path / "profile")
    yield session
    session.quit()


def assert_only_local(browser: Browser) -> None:
    outside = [url for url in browser.resources() if not url.startswith(LOCAL)]
    assert not outside, f"the page loaded something from elsewhere: {outside}"


def sign_in(browser: Browser, base: str, token: str = TOKEN) -> None:
    browser.go(f"{base}/dashboard")
    browser.wait_for("return location.pathname === '/dashboard/login';")
    browser.type("#token", token)
    browser.click("#login-submit")


# ---- scenarios ---------------------------------------------------------------------------------

def test_home_page_shows_live_health_and_links_to_the_docs(make_live, browser):
    live = make_live()
    browser.go(f"{live.url}/")
    status = browser.wait_for("const c = document.querySelector('td[data-field=\"status\"]'); return c && c.textContent;")
    assert status == "healthy"
    assert browser.run("return document.querySelector('td[data-field=\"database\"]').textContent;").startswith(
        "connected")
    assert browser.run("return document.querySelector('#docs-link').getAttribute('href');") == "/docs"
    assert_only_local(browser)
    assert browser.screenshot("home.png").stat().st_size > 10_000


def test_docs_page_lists_every_operation_of_the_document(make_live, browser):
    live = make_live()
    doc = requests.get(f"{live.url}/api/v1/openapi.json", timeout=10).json()
    documented = sorted(f"{method.upper()} {path}" for path, item in doc["paths"].items() for method in item)
    browser.go(f"{live.url}/docs")
    shown = browser.wait_for("return [...document.querySelectorAll('#operations section.op')]"
                             ".map(s => s.dataset.method + ' ' + s.dataset.path);")
    assert sorted(shown) == documented
    assert browser.run("return document.querySelectorAll('#webhook-operations section.op').length;") == 1
    node = browser.run("return document.querySelector('#recipe-node').textContent;")
    assert "Object.keys(value).sort()" in node and "createHmac('sha256'" in node
    assert browser.run("return document.querySelectorAll('#op-generateDescriptions details pre').length;") >= 4
    assert_only_local(browser)
    assert browser.screenshot("docs.png").stat().st_size > 10_000
    browser.run("document.querySelector('#op-getBatchResults').scrollIntoView();")
    browser.screenshot("docs-operation.png")


def test_dashboard_login_live_progress_and_job_page(make_live, sandbox, image_server, receiver, browser):
    live = make_live(ADMIN_TOKEN=TOKEN, SESSION_SECRET="browser-session-secret-0123456789")
    api = Api(live.url)
    done_lots = [lot("done-1", [image_server.url("/img/d1.jpg")], info="2019 Skoda Octavia, dented door",
                     webhook=receiver.url()),
                 lot("done-2", [image_server.url("/missing/d2.jpg")], webhook=receiver.url())]
    finished = api.generate(done_lots, languages=["en", "de"]).json()["job_id"]
    assert api.wait_status(finished)["status"] == "completed"
    receiver.wait_for(1)
    sandbox.configure(batch_in_progress_seconds=STAGE_SECONDS)
    running = api.generate([lot(f"run-{i}", [image_server.url(f"/img/r{i}.jpg")]) for i in range(2)],
                           languages=["en", "fr"]).json()["job_id"]
    api.wait_status(running, statuses=("processing",))

    sign_in(browser, live.url, token="not-the-token")
    assert browser.wait_for("const e = document.querySelector('#login-error'); return e && e.textContent;")
    sign_in(browser, live.url)
    row = f'tr[data-job-id="{running}"]'
    browser.wait_for("return !!document.querySelector(arguments[0]);", row)
    assert browser.cell(row, "status") == "processing"
    assert browser.cell(row, "bar", "aria-valuenow") == "0.0"
    done_row = f'tr[data-job-id="{finished}"]'
    assert browser.cell(done_row, "percent") == "100.0%"
    eventually(lambda: browser.run("return document.querySelector(arguments[0] + ' [data-w=delivered]')"
                                   ".textContent;", done_row) == "1", timeout=10)
    assert_only_local(browser)
    assert browser.screenshot("dashboard.png").stat().st_size > 10_000

    # the page is never reloaded from here on: the 2-second poll moves the bar
    browser.run("window.notReloaded = true;")
    eventually(lambda: browser.cell(row, "bar", "aria-valuenow") == "50.0", timeout=STAGE_SECONDS * 3)
    assert browser.cell(row, "status") == "translating"
    browser.screenshot("dashboard-translating.png")
    eventually(lambda: browser.cell(row, "status") == "completed", timeout=STAGE_SECONDS * 4)
    assert browser.cell(row, "bar", "aria-valuenow") == "100.0"
    assert int(browser.cell(row, "tokens").replace(",", "")) > 0
    assert browser.run("return window.notReloaded === true;")

    browser.click(f'tr[data-job-id="{finished}"] a[data-f="link"]')
    browser.wait_for("return location.pathname === arguments[0];", f"/dashboard/jobs/{finished}")
    assert browser.run("return document.querySelectorAll('article.lot').length;") == 2
    assert browser.run("return document.querySelectorAll('[data-lot-id=\"done-1\"] .damages p').length;") >= 1
    assert browser.run("return document.querySelector('[data-lot-id=\"done-2\"] .error').textContent;")
    assert browser.screenshot("job.png", height=1200).stat().st_size > 10_000
    browser.run("document.querySelector('[data-lot-id=\"done-2\"]').scrollIntoView();")
    browser.screenshot("job-failed-lot.png")

    browser.click("#logout-form button")
    browser.wait_for("return location.pathname === '/dashboard/login';")
