"""Screenshot each page of the Snakemake report in headless Chromium, to look at what a reviewer sees.

    snakemake --report results/report.html
    python tools/report_screenshots.py results/report.html --out /tmp/report-shots

Needs Debian's chromium (`apt-get install chromium`). Drives it over the DevTools protocol
(websocket-client, installed with the Kubernetes executor plugin): opens the report, clicks each
result category and each result in it, and writes one PNG per view. Prints the text of every
view too, so a check can grep it. Not part of `make test` (Chromium is not installed there).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Page:
    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def shot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


# The report is a single-page app: the menu's category links, then a table of files per category,
# each with an "eye" button that shows the file.
HOME = "document.querySelector('nav ol li a').click()"
CATEGORY = "[...document.querySelectorAll('nav a')].find(e => e.textContent.trim() === %s).click()"
FILES = "[...document.querySelectorAll('nav tr td:first-child')].map(e => e.textContent.trim())"
VIEW = "document.querySelectorAll('nav tr')[%d].querySelector('a[iconname=eye]').click()"


def open_category(page: Page, category: str) -> list[str]:
    page.js(HOME)
    time.sleep(0.5)
    page.js(CATEGORY % json.dumps(category))
    time.sleep(0.5)
    return page.js(FILES) or []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=Path("/tmp/report-shots"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("chromium not found: apt-get install chromium", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="chromium-")
    port = 9333
    proc = subprocess.Popen(
        [chromium, *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}", f"--remote-allow-origins=http://127.0.0.1:{port}",
         f"--window-size={args.width},{args.height}", args.report.resolve().as_uri()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(50):
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                break
            except OSError:
                time.sleep(0.2)
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        time.sleep(2)
        page.shot(args.out / "00-home.png")
        categories = page.js(
            "[...document.querySelectorAll('nav a')].map(e => e.textContent.trim()).filter(t => /^[0-9] /.test(t))"
        )
        for n, cat in enumerate(categories, 1):
            files = open_category(page, cat)
            page.shot(args.out / f"{n:02d}-{cat.replace(' ', '_')}.png")
            for k, item in enumerate(files):
                open_category(page, cat)
                page.js(VIEW % (k + 1))
                time.sleep(1.5)
                name = args.out / f"{n:02d}-{cat.replace(' ', '_')}-{Path(item).name}.png"
                page.shot(name)
                print(f"== {cat} / {item}: {name}")
        print(f"screenshots in {args.out}")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
