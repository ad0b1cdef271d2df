"""The app in a real browser: Debian's chromium, driven by Playwright, with a fake webcam that plays
real FER+ faces. Starts `python app.py` on a free port and checks what a user would see.

Set KEFER_SCREENSHOT=docs/screenshot.png to also save a screenshot of the streaming app there.
"""
import os
import re
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


SHIPPED = all((ROOT / "assets" / m).is_file() for m in ("accurate-int8.onnx", "accurate.safetensors"))


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):  # noqa: F811
    """`python app.py` (its defaults: the shipped accurate model, int8 for the webcam, else --checkpoint ...)
    on a free port;
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


def start_webcam(page, url: str, goto: bool = True) -> None:
    if goto:
        page.goto(url, wait_until="domcontentloaded")
    page.locator('#cam [title="grant webcam access"] button').click(timeout=TIMEOUT_MS)
    page.wait_for_function(
        "document.querySelector('#cam video[data-testid=\"webcam-video\"]')?.readyState >= 2", timeout=TIMEOUT_MS)
    page.locator("#cam button.capture-button").click()


def class_names(page) -> set:
    return set(page.locator("#classes textarea").input_value().split("\n"))


def labelled_class(label: str) -> str:
    """The class a face label names: "happiness 0.93", or "uncertain (contempt 0.41)" below the
    model's abstain margin."""
    return label.removeprefix("uncertain (").rsplit(" ", 1)[0]


def output_src(page) -> str:
    return page.locator("#cam-out img").first.get_attribute("src") or ""


def wait_for_new_frame(page, previous: str) -> str:
    """Wait until the annotated frame shown in ``page`` is a new one; returns its src."""
    page.wait_for_function("prev => (document.querySelector('#cam-out img')?.getAttribute('src') || '') !== prev",
                           arg=previous, timeout=TIMEOUT_MS)
    return output_src(page)


def saturated_fraction(png: bytes) -> float:
    """Share of strongly coloured pixels: the fake webcam is grey, so they are the drawn boxes and labels."""
    import io

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) > 80).mean())


def test_webcam_calibration_and_a_second_tab(server, browser):
    context = browser.new_context(permissions=["camera"], viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.goto(server, wait_until="domcontentloaded")

    # the neutral calibration's status follows what happens: no frames yet, then recording, then done
    page.locator("#record").click(timeout=TIMEOUT_MS)
    page.locator("#calibration", has_text="Waiting for webcam frames").wait_for(timeout=TIMEOUT_MS)
    start_webcam(page, server, goto=False)
    page.locator("#calibration", has_text="Recording your neutral face").wait_for(timeout=TIMEOUT_MS)
    page.locator("#calibration", has_text="/5 frames with a face").wait_for(timeout=TIMEOUT_MS)
    done = page.locator("#calibration", has_text="Neutral face recorded from")
    done.wait_for(timeout=TIMEOUT_MS)
    assert "spread" in done.inner_text()
    assert "Neutral face recorded" not in page.locator("#cam-bars").inner_text()

    # the stream: an annotated frame, a face label and one bar per class
    page.locator("#cam-bars .kefer-bars").wait_for(timeout=TIMEOUT_MS)
    assert page.locator("#cam-bars .kefer-bars p b").first.inner_text().startswith("Face 1 of 1")
    classes = class_names(page)
    assert labelled_class(page.locator("#cam-bars .kefer-label").first.inner_text()) in classes
    assert page.locator("#cam-bars .kefer-row").count() == len(classes)
    page.locator("#cam-out img").wait_for(timeout=TIMEOUT_MS)
    if page.locator("#cam-bars .kefer-label").first.inner_text().startswith("uncertain"):
        # an uncertain face is boxed in grey, invisible on the grey fake webcam: answer without abstaining
        page.locator("#abstain input").first.uncheck(timeout=TIMEOUT_MS)
        page.locator("#cam-bars .kefer-label", has_text=re.compile(r"^(?!uncertain)")).first.wait_for(timeout=TIMEOUT_MS)
        time.sleep(1)   # the next annotated frame
    assert saturated_fraction(page.locator("#cam-out img").screenshot()) > 0.002  # a box and its label
    page.locator("#text-status", has_text="Text encoder ready.").wait_for(timeout=TIMEOUT_MS)
    page.locator("#map img").wait_for(timeout=TIMEOUT_MS)

    # a second tab streams at the same time, with its own state, and the first keeps streaming
    second = context.new_page()
    start_webcam(second, server)
    second.locator("#cam-bars .kefer-bars").wait_for(timeout=TIMEOUT_MS)
    first_src, second_src = output_src(page), output_src(second)
    for _ in range(3):
        first_src, second_src = wait_for_new_frame(page, first_src), wait_for_new_frame(second, second_src)
    assert "recorded" not in second.locator("#calibration").inner_text()  # the first tab's calibration
    second.close()

    if os.environ.get("KEFER_SCREENSHOT"):
        page.wait_for_timeout(3500)  # one more map tick
        page.screenshot(path=str(ROOT / os.environ["KEFER_SCREENSHOT"]), full_page=True)
    if SHIPPED:  # which model scores what is said on each tab
        assert "accurate-int8" in page.locator("#cam-model").inner_text()
        assert "onnxruntime int8" in page.locator("#cam-model").inner_text()
    context.close()


def test_photo_tiles_prompt_editing_and_errors(server, browser, faces, tmp_path):
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.goto(server, wait_until="domcontentloaded")
    photo = tmp_path / "two.png"
    Image.fromarray(paste([faces[1], faces[2]], [(20, 100, 160), (330, 60, 260)])).save(photo)
    page.get_by_role("tab", name="Photos").click(timeout=TIMEOUT_MS)
    if SHIPPED:
        assert "accurate" in page.locator("#photo-model").inner_text()
    page.locator("#upload input[type=file]").set_input_files(str(photo))

    # each face is its own tile with its label; a click on either shows that face's bars
    captions = page.locator("#gallery .caption-label")
    captions.nth(1).wait_for(timeout=TIMEOUT_MS)
    texts = [captions.nth(i).inner_text() for i in range(captions.count())]
    assert len(texts) == 2 and all(t.startswith(f"two.png · face {i + 1}: ") for i, t in enumerate(texts))
    assert all(labelled_class(t.split(": ", 1)[1]) in class_names(page) for t in texts)
    bars = page.locator("#photo-bars .kefer-bars")
    assert "two.png: face 1 of 2" in bars.inner_text()
    page.locator("#gallery button.thumbnail-item").nth(1).click()
    page.locator("#photo-bars", has_text="two.png: face 2 of 2").wait_for(timeout=TIMEOUT_MS)
    assert page.locator("#photo-bars .kefer-label").inner_text() == texts[1].split(": ", 1)[1]
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
    # the anchor report says which classes are zero-shot; the bars tag them
    page.locator('#anchor-report [data-class="confused"][data-trained="0"]').wait_for(timeout=TIMEOUT_MS)
    assert page.locator('#anchor-report [data-trained="1"]').count() == 2
    assert page.locator('#photo-bars [data-class="confused"] .kefer-zero-shot').count() == 1
    assert page.locator("#photo-bars .kefer-zero-shot").count() == 1

    # an unreadable file is explained by its name, never a server path
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    page.locator("#upload input[type=file]").set_input_files(str(broken))
    message = page.locator("#photo-message", has_text="broken.png: not a readable image")
    message.wait_for(timeout=TIMEOUT_MS)
    assert "/" not in message.inner_text()
    context.close()
