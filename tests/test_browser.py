"""The app in a real browser: Debian's chromium, driven by Playwright, with a fake webcam that plays
real FER+ faces. Starts `python app.py` on a free port and checks what a user would see.

Set KEFER_SCREENSHOT=docs/screenshot.png to also save the screenshot of the streaming app there.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_app import checkpoint  # noqa: F401  (the session's model fixture)
from test_faces import ferplus_faces, paste

playwright = pytest.importorskip("playwright.sync_api", reason="needs: pip install playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("needs Debian's chromium: apt-get install -y chromium", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 60_000


def write_y4m(path: Path, frames: list[np.ndarray], repeat: int) -> None:
    """Grey [480, 640] uint8 frames -> a 640x480 15 fps Y4M video (4:2:0, neutral chroma), each frame
    repeated ``repeat`` times; Chromium loops it as the fake webcam."""
    chroma = np.full((240, 320), 128, np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W640 H480 F15:1 Ip A1:1 C420jpeg\n")
        for frame in frames:
            for _ in range(repeat):
                f.write(b"FRAME\n" + np.ascontiguousarray(frame).tobytes() + chroma + chroma)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def faces(ferplus_root):
    return ferplus_faces(ferplus_root, 3)


SHIPPED = all((ROOT / "assets" / f"{m}.safetensors").is_file() for m in ("fast", "accurate"))


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):  # noqa: F811
    """`python app.py` (the shipped fast + accurate models, else --checkpoint ...) on a free port;
    yields its URL."""
    port = free_port()
    tmp = tmp_path_factory.mktemp("gradio")
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(tmp / "app.log", "w")
    models = [] if SHIPPED else ["--checkpoint", str(checkpoint)]
    proc = subprocess.Popen([sys.executable, "app.py", *models, "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"app.py did not start:\n{(tmp / 'app.log').read_text()}")
            time.sleep(1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser(faces, tmp_path_factory):
    """Headless chromium whose webcam plays three real FER+ faces, one after the other."""
    video = tmp_path_factory.mktemp("video") / "faces.y4m"
    frames = [paste([face], [(200, 120, 240)])[:, :, 0] for face in faces]
    write_y4m(video, frames, repeat=15)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={video}"])
        yield browser
        browser.close()


def start_webcam(page, url: str) -> None:
    page.goto(url, wait_until="domcontentloaded")
    page.locator('#cam [title="grant webcam access"] button').click(timeout=TIMEOUT_MS)
    page.wait_for_function(
        "document.querySelector('#cam video[data-testid=\"webcam-video\"]')?.readyState >= 2", timeout=TIMEOUT_MS)
    page.locator("#cam button.capture-button").click()


def class_names(page) -> set:
    return set(page.locator("#classes textarea").input_value().split("\n"))


def test_webcam_upload_and_prompt_editing(server, browser, faces, tmp_path):
    context = browser.new_context(permissions=["camera"], viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    start_webcam(page, server)

    # the stream: an annotated frame, a face label and one bar per class
    page.locator("#cam-bars .kefer-bars").wait_for(timeout=TIMEOUT_MS)
    label = page.locator("#cam-bars .kefer-bars p b").first.inner_text()
    assert label.startswith("Face 1 of 1")
    classes = class_names(page)
    top = page.locator("#cam-bars .kefer-bars p").first.inner_text().split(": ")[-1]
    assert top in classes
    assert page.locator("#cam-bars .kefer-row").count() == len(classes)
    page.locator("#cam-out img").wait_for(timeout=TIMEOUT_MS)
    page.locator("#map img").wait_for(timeout=TIMEOUT_MS)  # the map's timer has drawn it

    # a second tab streams at the same time (concurrency_limit=2), with its own state
    second = context.new_page()
    start_webcam(second, server)
    second.locator("#cam-bars .kefer-bars").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1500)
    assert page.locator("#cam-bars .kefer-bars").count() == 1
    second.close()

    screenshot = tmp_path / "screenshot.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert Image.open(screenshot).size[0] >= 1500
    if os.environ.get("KEFER_SCREENSHOT"):
        shutil.copy(screenshot, ROOT / os.environ["KEFER_SCREENSHOT"])

    # which model scores what is said on each tab
    if SHIPPED:
        assert "fast" in page.locator("#cam-model").inner_text()

    # a photo upload: the face is found and scored
    photo = tmp_path / "face.png"
    Image.fromarray(paste([faces[1]], [(150, 100, 260)])).save(photo)
    page.get_by_role("tab", name="Photos").click()
    if SHIPPED:
        assert "accurate" in page.locator("#photo-model").inner_text()
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    bars = page.locator("#photo-bars .kefer-bars")
    bars.wait_for(timeout=TIMEOUT_MS)
    assert "face.png: largest face" in bars.inner_text()
    before = bars.inner_text()

    # a template without [CLS] is refused inline; a valid edit with a new class changes the bars
    page.locator("#template textarea").fill("A photo of a face.")
    page.locator("#apply").click()
    page.locator("#prompt-message", has_text="must contain [CLS]").wait_for(timeout=TIMEOUT_MS)
    page.locator("#template textarea").fill("A person is feeling [CLS].")
    page.locator("#classes textarea").fill("neutral\nhappiness\nconfused")
    page.locator("#apply").click()
    page.locator('#photo-bars [data-class="confused"]').wait_for(timeout=TIMEOUT_MS)
    assert bars.inner_text() != before
    assert page.locator("#photo-bars .kefer-row").count() == 3

    # an unreadable file is explained, not a traceback
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    page.locator("#upload input[type=file]").set_input_files(str(broken))
    page.locator("#photo-message", has_text="broken.png: not a readable image").wait_for(timeout=TIMEOUT_MS)
    context.close()
