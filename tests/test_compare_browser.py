"""A real headless Chromium opens the report: no console errors, no fetches, a non-blank page.

Driven over the DevTools protocol: console and exception events prove there are no errors,
`Network.requestWillBeSent` proves nothing but the file itself and data: URIs is loaded, and the
screenshot is checked for content.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from components.compare.compare import CompareConfig, run
from tests.fixtures_compare import write_pair

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")


class DevTools:
    """A minimal DevTools-protocol client over one page's websocket."""

    def __init__(self, url: str):
        import websocket

        self.socket = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == method for event in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(json.loads(self.socket.recv()))


def start_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Start headless Chromium on a free DevTools port; return it and the page's websocket URL."""
    process = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1280,2000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 90
    while not (port_file.exists() and port_file.read_text().strip()):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("chromium did not open its DevTools port")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
        pages = [t for t in json.load(response) if t["type"] == "page"]
    return process, pages[0]["webSocketDebuggerUrl"]


@pytest.mark.slow
def test_chromium_renders_the_report_without_errors_or_fetches(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs", 0.85, 0.9, pretrained=False)
    result = run(
        CompareConfig(
            cnn_dir=str(cnn),
            transfer_dir=str(transfer),
            output_dir=str(tmp_path / "out"),
            store=str(tmp_path / "store"),
        )
    )
    page_url = Path(result.report_html).resolve().as_uri()
    profile = tmp_path / "profile"
    profile.mkdir()
    process, websocket_url = start_chromium(profile)
    try:
        devtools = DevTools(websocket_url)
        for domain in ("Runtime", "Log", "Network", "Page"):
            devtools.call(f"{domain}.enable")
        devtools.call("Page.navigate", url=page_url)
        devtools.wait_for("Page.loadEventFired")
        images = devtools.call(
            "Runtime.evaluate",
            expression="JSON.stringify(Array.from(document.images).map("
            "i => [i.complete, i.naturalWidth, i.src.slice(0, 22)]))",
            returnByValue=True,
        )
        headline = devtools.call(
            "Runtime.evaluate",
            expression="document.getElementById('headline').innerText",
            returnByValue=True,
        )
        shot = devtools.call("Page.captureScreenshot", format="png")
        devtools.call("Browser.close")
    finally:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    errors = [
        event
        for event in devtools.events
        if event.get("method") == "Runtime.exceptionThrown"
        or (
            event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error"
        )
        or (
            event.get("method") == "Runtime.consoleAPICalled"
            and event["params"]["type"] in ("error", "assert")
        )
    ]
    assert errors == []
    fetched = [
        event["params"]["request"]["url"]
        for event in devtools.events
        if event.get("method") == "Network.requestWillBeSent"
    ]
    assert page_url in fetched
    assert [url for url in fetched if url != page_url and not url.startswith("data:")] == []

    loaded = json.loads(images["result"]["value"])
    assert len(loaded) == len(result.comparison["figures"]) == 6
    assert all(
        done and width > 100 and src == "data:image/png;base64," for done, width, src in loaded
    )
    assert headline["result"]["value"].startswith("No pretrained backbone ran")

    screenshot = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    (tmp_path / "screenshot.png").write_bytes(base64.b64decode(shot["data"]))
    assert screenshot.size[0] >= 1000
    pixels = list(screenshot.getdata())
    non_white = sum(1 for pixel in pixels if min(pixel) < 240) / len(pixels)
    assert non_white > 0.05
    assert len(set(pixels)) > 200
