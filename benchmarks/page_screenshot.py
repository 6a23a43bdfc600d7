"""Photograph the top of a run's leaderboard.html in headless Chromium (the README's picture).

    python benchmarks/page_screenshot.py runs/smol_study docs/leaderboard_page.png

Needs the Debian packages chromium and chromium-driver and the dev extra (selenium).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder holding leaderboard.html")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--size", default="1400,1000", help="window width,height in pixels")
    args = parser.parse_args()
    page = Path(args.run) / "leaderboard.html"
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not page.is_file():
        sys.exit(f"{page} does not exist; run `harness leaderboard {args.run}` first")
    if not (chromium and driver_path):
        sys.exit("needs the Debian packages chromium and chromium-driver")
    from selenium import webdriver

    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--hide-scrollbars", f"--user-data-dir={profile}",
                     f"--window-size={args.size}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
        try:
            driver.get(page.resolve().as_uri())
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.out)
        finally:
            driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
