"""Screenshot of the `serve` page for the README: data-folder images of RUN(s), side by side.

    python scripts/screenshot_serve.py RUN [RUN ...] --data DATA --out docs/serve.png

Starts `dirtymnist serve` on a free port, opens it in headless Chromium (selenium + Debian's
chromedriver), shows --count images of --split from --offset, clicks --letter, saves the PNG.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="docs/serve.png")
    ap.add_argument("--split", default="train")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--letter", help="letter whose heat map to show (default: the most probable)")
    ap.add_argument("--size", default="1300,820", help="window WIDTH,HEIGHT")
    args = ap.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from dirtymnist.look.serve import launch

    server, url = launch([*args.runs, "--data", args.data])
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={args.size}",
                "--hide-scrollbars", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(arg)
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        driver.get(f"{url}/")
        while not driver.execute_script("return document.body.getAttribute('data-ready')"):
            time.sleep(0.1)
        while driver.execute_script("return document.getElementById('status').getAttribute('data-pending') != '0'"):
            time.sleep(0.2)  # the first screen's images
        driver.find_element(By.ID, "clear").click()
        driver.execute_script(f"document.getElementById('split').value = '{args.split}';"
                              f"document.getElementById('offset').value = {args.offset};"
                              f"document.getElementById('count').value = {args.count};")
        driver.find_element(By.ID, "showdata").click()
        while driver.execute_script(f"return document.querySelectorAll('.card').length < {args.count} || "
                                    "document.getElementById('status').getAttribute('data-pending') != '0'"):
            time.sleep(0.2)
        if args.letter:
            driver.find_element(By.CSS_SELECTOR, f".card .chip[data-j='{ord(args.letter) - 97}']").click()
        time.sleep(0.5)
        driver.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
