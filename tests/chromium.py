"""Headless Chromium driven over the DevTools protocol: open a page, collect what it did.

Shared by the report's browser test (tests/test_compare_browser.py) and the images' end-to-end
test (tests/test_images.py).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


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


@dataclass
class Rendered:
    """What a page did while it loaded in Chromium."""

    events: list[dict]  # every DevTools event received
    images: list[list]  # per <img>: [complete, natural width, the first 22 characters of src]
    headline: str  # the innerText of #headline
    screenshot: bytes | None  # PNG, when asked for


def render(page_url: str, workdir: Path, screenshot: bool = False) -> Rendered:
    """Load `page_url` in a fresh headless Chromium (profile in `workdir`), then close it."""
    import base64

    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True)
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
        shot = devtools.call("Page.captureScreenshot", format="png") if screenshot else None
        devtools.call("Browser.close")
    finally:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return Rendered(
        events=devtools.events,
        images=json.loads(images["result"]["value"]),
        headline=headline["result"]["value"],
        screenshot=base64.b64decode(shot["data"]) if shot else None,
    )


def page_errors(events: list[dict]) -> list[dict]:
    """Uncaught exceptions, error log entries and console errors or failed asserts."""
    return [
        event
        for event in events
        if event.get("method") == "Runtime.exceptionThrown"
        or (
            event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error"
        )
        or (
            event.get("method") == "Runtime.consoleAPICalled"
            and event["params"]["type"] in ("error", "assert")
        )
    ]


def fetched_urls(events: list[dict]) -> list[str]:
    """Every URL the page requested."""
    return [
        event["params"]["request"]["url"]
        for event in events
        if event.get("method") == "Network.requestWillBeSent"
    ]
