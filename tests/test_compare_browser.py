"""A real headless Chromium opens the report: no console errors, no fetches, a non-blank page.

Driven over the DevTools protocol (tests/chromium.py): console and exception events prove there
are no errors, `Network.requestWillBeSent` proves nothing but the file itself and data: URIs is
loaded, and the screenshot is checked for content.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from components.compare.compare import CompareConfig, run
from tests.chromium import CHROMIUM, fetched_urls, page_errors, render
from tests.fixtures_compare import write_pair

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")


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
    page = render(page_url, tmp_path, screenshot=True)

    assert page_errors(page.events) == []
    fetched = fetched_urls(page.events)
    assert page_url in fetched
    assert [url for url in fetched if url != page_url and not url.startswith("data:")] == []

    assert len(page.images) == len(result.comparison["figures"]) == 6
    assert all(
        done and width > 100 and src == "data:image/png;base64," for done, width, src in page.images
    )
    assert page.headline.startswith("No pretrained backbone ran")

    (tmp_path / "screenshot.png").write_bytes(page.screenshot)
    screenshot = Image.open(io.BytesIO(page.screenshot)).convert("RGB")
    assert screenshot.size[0] >= 1000
    pixels = list(screenshot.getdata())
    non_white = sum(1 for pixel in pixels if min(pixel) < 240) / len(pixels)
    assert non_white > 0.05
    assert len(set(pixels)) > 200
