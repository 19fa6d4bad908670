"""The ROC browser in a real browser: JupyterLab (127.0.0.1 only) in headless Debian Chromium via Playwright.

Opt-in (marker ``browser``; needs ``apt-get install -y chromium``):
    PYTHONPATH=. .venv/bin/python -m pytest -m browser tests/test_browser.py
Moving the observation dropdown, the level toggle and the threshold must change the plot, the table
and the gallery the kernel sends back.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, wait_for_jupyter
from test_widgets import frame, write_images, write_run  # noqa: F401  (frame: a fixture)

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 180_000  # a loaded 2-core machine: kernel start and each redraw can take a while

CELL = """\
import pandas as pd
from chexutils.report.widgets import RocBrowser, load_run_scores
frame = pd.read_csv("frame.csv")
RocBrowser([load_run_scores("run_a", frame, name="a"), load_run_scores("run_b", frame, name="b")], image_root=".")
"""


@pytest.fixture
def lab(tmp_path, frame):  # noqa: F811
    """A JupyterLab server on 127.0.0.1 over a folder with two runs, their images and a one-cell notebook."""
    assert CHROMIUM.is_file(), f"{CHROMIUM} missing: install Debian's chromium (apt-get install -y chromium)"
    for name, seed in (("a", 1), ("b", 2)):
        write_run(tmp_path, frame, name, seed)
    write_images(tmp_path, frame)
    frame.to_csv(tmp_path / "frame.csv", index=False)
    notebook = {
        "cells": [{"cell_type": "code", "metadata": {}, "source": CELL, "outputs": [], "execution_count": None}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (tmp_path / "browser.ipynb").write_text(json.dumps(notebook))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--ServerApp.port_retries=0",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_jupyter(url, token, server, tmp_path / "jupyterlab.log")
        yield f"{url}/lab/tree/browser.ipynb?token={token}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _sources(page) -> dict:
    """The plot's and gallery's PNG data URLs and the table's text, as the browser shows them."""
    return page.evaluate("""() => {
        const outputs = [...document.querySelectorAll('.jp-OutputArea-output .widget-output')];
        const img = (i) => { const el = outputs[i] && outputs[i].querySelector('img'); return el ? el.src : ''; };
        const table = document.querySelector('.jp-OutputArea-output .widget-html table');
        return {plot: img(0), gallery: img(1), table: table ? table.innerText : ''};
    }""")


def _wait_until(page, condition, what: str) -> dict:
    """Poll until ``condition(sources)`` holds. The browser sets the table last, so a table showing the
    new state means the plot and gallery of the same redraw have arrived already."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        now = _sources(page)
        if now["plot"] and now["gallery"] and condition(now):
            return now
        page.wait_for_timeout(500)
    raise AssertionError(
        f"the browser never showed {what} within {WAIT_MS / 1000:.0f} s; last table: {_sources(page)['table']!r}"
    )


def _changed(before: dict, after: dict) -> list:
    return [k for k in ("plot", "gallery", "table") if after[k] != before[k]]


def test_controls_change_plot_table_and_gallery_in_chromium(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(WAIT_MS)
            page.goto(lab)
            page.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached")
            page.keyboard.press("Shift+Enter")
            page.wait_for_selector(".widget-dropdown select")
            page.wait_for_function("() => document.querySelectorAll('.widget-output img').length >= 2")
            start = _wait_until(page, lambda s: "one class" in s["table"], "No Finding (one class) at first")
            assert start["plot"].startswith("data:image/png") and start["gallery"].startswith("data:image/png")

            page.select_option(".widget-dropdown select", "Edema")  # observation: both classes present
            edema = _wait_until(page, lambda s: s["table"] and "one class" not in s["table"], "Edema's table")
            assert _changed(start, edema) == ["plot", "gallery", "table"]

            page.locator(".widget-toggle-buttons button", has_text="image").click()  # level: 7 images, not 4 studies
            image_level = _wait_until(page, lambda s: re.search(r"^a\s+7\s", s["table"], re.M), "image level")
            assert _changed(edema, image_level) == ["plot", "gallery", "table"]

            readout = page.locator(".widget-slider .widget-readout").first  # threshold: type a value
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("0.95")
            page.keyboard.press("Enter")
            after = _wait_until(page, lambda s: "0.950" in s["table"], "threshold 0.950")
            assert _changed(image_level, after) == ["plot", "gallery", "table"]
        finally:
            browser.close()
