"""Screenshots of an HTML report in headless Chromium (Debian's chromium, driven by Playwright).

    python scripts/report_screenshots.py reports/example_report.html reports/

writes ``<name>_top.png`` (the first screen, 1280 x 900) and ``<name>_wright.png`` (the first
Wright map) beside each other in the output folder.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    stem = args.report.stem
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(args.report.resolve().as_uri(), wait_until="load")
        page.screenshot(path=str(args.out / f"{stem}_top.png"))
        page.locator("#wright figure img").first.screenshot(path=str(args.out / f"{stem}_wright.png"))
        browser.close()
    print(f"Wrote {args.out / f'{stem}_top.png'} and {args.out / f'{stem}_wright.png'}")


if __name__ == "__main__":
    main()
