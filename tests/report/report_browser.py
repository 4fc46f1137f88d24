"""Open a report in headless Chromium (Debian's ``chromium`` driven by Playwright).

What a reader's browser would do: load the file, render it, run whatever script it holds. We
record console messages, page errors, dialogs (``alert``), every request that is not the file
itself or an inline ``data:`` URI, and the rendered size of every figure.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    for name in (os.environ.get("IRTPEER_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (found := shutil.which(name)):
            return found
    return None


def require_browser() -> str:
    """The Chromium binary, or skip saying why no browser is available on this machine."""
    path = chromium_path()
    if path is None:
        pytest.skip("no browser can be installed here: Debian's chromium is missing and "
                    "scripts/test.sh could not apt-get install it (no apt-get or not root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright's python package is missing: pip install -e '.[dev]'")
    return path


@dataclass
class PageVisit:
    console: list[str] = field(default_factory=list)  # "type: text"
    errors: list[str] = field(default_factory=list)  # uncaught page errors
    dialogs: list[str] = field(default_factory=list)  # alert/confirm/prompt texts
    requests: list[str] = field(default_factory=list)  # anything but the file and data: URIs
    figures: list[dict] = field(default_factory=list)  # per <img>: sizes, complete
    text: str = ""
    scripts: int = 0
    screenshot: Path | None = None


def visit(report: Path, *, screenshot: Path | None = None, full_page: bool = False,
          width: int = 1280, height: int = 900) -> PageVisit:
    from playwright.sync_api import sync_playwright

    out = PageVisit()
    url = Path(report).resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_browser(), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: out.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: out.errors.append(str(e)))

            def on_dialog(d):
                out.dialogs.append(d.message)
                d.dismiss()

            page.on("dialog", on_dialog)

            def on_request(req):
                if req.url != url and not req.url.startswith("data:"):
                    out.requests.append(req.url)

            page.on("request", on_request)
            page.goto(url, wait_until="load")
            page.wait_for_timeout(200)
            out.figures = page.eval_on_selector_all(
                "img",
                "els => els.map(e => ({alt: e.alt, complete: e.complete, natural: e.naturalWidth,"
                " width: e.getBoundingClientRect().width,"
                " height: e.getBoundingClientRect().height}))",
            )
            out.text = page.inner_text("body")
            out.scripts = page.eval_on_selector_all("script", "els => els.length")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=full_page)
                out.screenshot = screenshot
        finally:
            browser.close()
    return out
