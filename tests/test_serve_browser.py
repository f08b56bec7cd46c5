"""The web page in a real browser: Debian's headless Chromium driven by Playwright (its own browser
downloads are unreachable, so it is pointed at the system's). Sign in through the one-time link, learn
from a photo, render, and see the images; a screenshot stays in the test's tmp folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from serve_helpers import server_env, start

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]


@pytest.mark.skipif(CHROMIUM is None, reason="no system chromium: apt-get install chromium (.ci/run does)")
def test_learn_and_render_in_the_browser(
    tmp_path: Path, tiny_model, facepack, tiny_vit, tiny_parser, face_photos: Path
) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    server = start(server_env(tmp_path / "home", tiny_model, facepack, tiny_vit, tiny_parser))
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(server.login)  # the printed link: a cookie, then the page
            page.wait_for_selector("#gallery")
            assert "No identities yet" in page.inner_text("#gallery")

            page.set_input_files("#photos", str(face_photos / "obama_1.jpg"))
            page.fill("#learn input[name=name]", "alice")
            page.fill("#learn input[name=model]", "tiny")
            page.fill("#learn input[name=steps]", "2")
            page.click("#learn button")
            page.wait_for_selector(".identity[data-name=alice] img", timeout=180_000)
            assert "learned alice" in page.inner_text("#learn-status")

            page.fill("#prompt", "alice as a knight")
            assert page.inner_text("#highlight mark") == "alice"  # the identity's name is highlighted
            page.fill("#render input[name=count]", "2")
            page.fill("#render input[name=seed]", "3")
            page.fill("#render input[name=steps]", "2")
            page.click("#render button")
            page.wait_for_function("document.querySelectorAll('.result img').length === 2", timeout=120_000)
            page.wait_for_function(
                "[...document.querySelectorAll('.result img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            assert "seed 3" in page.inner_text("#results") and "seed 4" in page.inner_text("#results")
            page.wait_for_function("document.querySelector('#render-status').textContent === 'done'")

            page.click(".result:first-child button")  # same seed again: one more image, same seed
            page.wait_for_function("document.querySelectorAll('.result img').length === 3", timeout=120_000)
            page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
    assert (tmp_path / "serve.png").stat().st_size > 10_000
