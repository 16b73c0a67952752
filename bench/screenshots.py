"""Screenshots per minute: a browser kept per worker process against a new browser per job.

Serves a few local pages with http.server, then takes N screenshots with 1 and 2 worker processes
in both modes, through the same code the demo's task uses (demo_project.shootr.browser and
imaging). It measures the capture path, not the queue: run it as ``python bench/screenshots.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo_project.shootr.browser import Browser, KeptBrowser
from demo_project.shootr.imaging import make_thumbnail

COLOURS = ("#c0392b", "#2980b9", "#27ae60", "#8e44ad", "#f39c12")


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(root: Path) -> tuple[ThreadingHTTPServer, str]:
    for i, colour in enumerate(COLOURS):
        (root / f"{i}.html").write_text(
            f"<!doctype html><title>Page {i}</title><body style='background:{colour}'>"
            f"<h1>Page {i}</h1>" + "<p>Lorem ipsum dolor sit amet.</p>" * 50
        )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def work(mode: str, urls: list[str], start: Any) -> None:
    """One worker process: take each screenshot of ``urls`` the way ``mode`` says."""
    kept = KeptBrowser()
    start.wait()
    for url in urls:
        if mode == "kept":
            png = kept.capture(url).png
        else:
            browser = Browser()
            try:
                png = browser.capture(url).png
            finally:
                browser.close()
        make_thumbnail(png)
    kept.close()


def run(mode: str, workers: int, urls: list[str]) -> float:
    """Screenshots per minute of ``workers`` processes sharing ``urls``."""
    context = multiprocessing.get_context("fork")
    start = context.Event()
    shares = [urls[i::workers] for i in range(workers)]
    processes = [context.Process(target=work, args=(mode, share, start)) for share in shares]
    for process in processes:
        process.start()
    began = time.perf_counter()
    start.set()
    for process in processes:
        process.join()
        if process.exitcode:
            raise SystemExit(f"a worker failed with exit code {process.exitcode}")
    return len(urls) * 60 / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--shots", type=int, default=20, help="screenshots per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        server, base = serve(Path(root))
        urls = [f"{base}/{i % len(COLOURS)}.html" for i in range(args.shots)]
        print(f"{args.shots} screenshots of local pages per run (1280x800, PNG + thumbnail)\n")
        print(f"{'workers':>7}  {'new browser per job':>20}  {'kept browser':>13}  {'speed-up':>8}")
        for workers in (1, 2):
            fresh = run("fresh", workers, urls)
            kept = run("kept", workers, urls)
            print(f"{workers:>7}  {fresh:>14.0f} /min  {kept:>7.0f} /min  {kept / fresh:>7.1f}x")
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
