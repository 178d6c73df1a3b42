"""The web page of ``sedkit serve`` in a real browser (headless Chromium driven by selenium).

One server (``python -m sed serve`` on a free loopback port, an API key from ``SED_API_KEY``) and one
browser serve every test of the module. The model is a tiny CNN whose head bias makes one class win; the
expected labels and scores come from :class:`sed.Classifier` on the same files, never from constants. Every
wait is a bounded WebDriverWait on a DOM condition (the page marks ``#results[data-state]`` done or error
when an answer is shown).
The browser tests are skipped only when Debian's ``chromium`` or ``chromium-driver`` is absent (``.ci/run``
installs them); the page's files are checked without a browser.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.serve.helpers import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
STATIC = Path(__file__).resolve().parents[2] / "sed" / "serve" / "static"

KEY = "page-test-key"
RATE = 16000
WAIT = 30  # seconds: the bound of every wait on the page (a first request loads the model's kernels)
#: the page's state once an answer is shown ("done" or "error"), else null
STATE = """const s = document.getElementById('results').dataset.state;
return s === 'done' || s === 'error' ? s : null;"""
#: seconds of audio the recorder holds
RECORDED = "return Number(document.getElementById('record-time').dataset.seconds || 0)"


def _tone(seconds: float, seed: int) -> np.ndarray:
    """A chirp over noise with a 3 kHz burst: structure the spectrogram shows at every hop."""
    t = np.arange(int(RATE * seconds)) / RATE
    x = 0.3 * np.sin(2 * np.pi * (300 + 500 * t) * t)
    x += 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    burst = (t > seconds / 3) & (t < seconds / 2)
    x[burst] += 0.4 * np.sin(2 * np.pi * 3000 * t[burst])
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from sed import save_model
    from sed.models import create_model

    root = tmp_path_factory.mktemp("page")
    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=3, labels=["dog bark", "siren", "rain"], clip_seconds=1.0)
    with torch.no_grad():
        model.head[1].weight.normal_(0, 0.5)
        model.head[1].bias.copy_(torch.tensor([0.0, 2.0, 0.0]))  # one class wins
    paths = {"checkpoint": save_model(root / "tiny.pt", model.eval())}
    for name, seconds in (("short", 0.8), ("long", 4.2)):
        paths[name] = root / f"{name}.wav"
        sf.write(paths[name], _tone(seconds, seed=len(name)), RATE)
    paths["bad"] = root / "broken.wav"
    paths["bad"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    return paths


@pytest.fixture(scope="module")
def url(files, tmp_path_factory):
    """The base URL of ``sedkit serve`` on a free loopback port, its key in ``SED_API_KEY`` (ready: it
    answered /health); stopped with its process group after the module."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with running_server(["--checkpoint", str(files["checkpoint"])], log, env={"SED_API_KEY": KEY}) as server:
        yield server.url


@pytest.fixture(scope="module")
def driver():
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(arg)
    # a fake microphone (Chromium's test source: beeps) that needs no permission prompt
    options.add_argument("--use-fake-device-for-media-stream")
    options.add_argument("--use-fake-ui-for-media-stream")
    # the driver's path given: Selenium Manager never looks for (or downloads) one
    browser = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    browser.set_script_timeout(WAIT)
    try:
        yield browser
    finally:
        browser.quit()


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(lambda d: condition(d), message=f"the page never showed {what}")


def _text(driver, id_: str) -> str:
    return driver.execute_script(f"return document.getElementById('{id_}').textContent")


def _enter_key(driver, key: str) -> None:
    from selenium.webdriver.common.by import By

    _wait(driver, lambda d: d.find_element(By.ID, "api-key").is_displayed(), "the API key field")
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "key-save").click()


@pytest.fixture(scope="module")
def page(driver, url):
    """The page opened, the key given: the service's description shown."""
    driver.get(f"{url}/")
    _enter_key(driver, KEY)
    _wait(driver, lambda d: _text(d, "status").startswith("Ready"), "'Ready' (the /info answer)")
    return driver


def _upload(page, path):
    """Send a file through the file input; the state the page reaches (done or error)."""
    from selenium.webdriver.common.by import By

    page.execute_script("document.getElementById('results').dataset.state = 'idle'")
    page.find_element(By.ID, "file-input").send_keys(str(path))
    return _wait(
        page,
        lambda d: (
            d.find_element(By.ID, "results").get_attribute("data-state") in ("done", "error")
            and d.find_element(By.ID, "results").get_attribute("data-state")
        ),
        f"an answer for {path.name}",
    )


def _no_script_errors(page) -> None:
    """The browser's console since the last look holds no JavaScript error (refused requests, logged by the
    network, are the tests' own doing)."""
    errors = [e["message"] for e in page.get_log("browser") if e.get("source") != "network"]
    assert not [m for m in errors if "error" in m.lower()], errors


def _pixels(page, canvas_id: str) -> tuple[int, int, int]:
    """(drawn pixels, pixels, distinct colours) of a canvas, read back through getImageData."""
    drawn, total, colours = page.execute_script(
        """const c = document.getElementById(arguments[0]);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set(); let drawn = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (d[i + 3] > 0) { drawn++; seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); }
        }
        return [drawn, d.length / 4, seen.size];""",
        canvas_id,
    )
    return drawn, total, colours


@functools.cache
def _classifier(checkpoint):
    from sed import Classifier

    return Classifier.from_pretrained(checkpoint, device="cpu")


def _expected(checkpoint, path) -> tuple[list[tuple[str, str]], list]:
    """The bars the page should show for a file: sed.Classifier's top 5, in windows of the clip (hop half a
    clip) when the file is longer than the clip, as the page asks the service."""
    clf = _classifier(checkpoint)
    clip = clf.clip_samples / clf.sample_rate
    windows = {"window": clip, "hop": clip / 2} if sf.info(str(path)).duration > clip else {}
    row = clf.predict([path], top_k=5, **windows)[0]
    return [(t["label"], f"{t['score']:.3f}") for t in row["top_k"]], row.get("windows", [])


def _bars(page) -> list[tuple[str, str]]:
    """(label, score text) of the top-k bars, best first."""
    rows = page.execute_script(
        """return [...document.querySelectorAll('#topk .row')].map(
            (r) => [r.querySelector('.label').textContent, r.querySelector('.score').textContent]);"""
    )
    return [tuple(r) for r in rows]


def test_upload_shows_the_classifiers_labels_and_a_drawn_spectrogram(page, files, tmp_path):
    from sed import Classifier

    expected = Classifier.from_pretrained(files["checkpoint"], device="cpu").predict(
        [files["short"]], top_k=5
    )[0]
    assert _upload(page, files["short"]) == "done", _text(page, "error")
    assert _bars(page) == [(t["label"], f"{t['score']:.3f}") for t in expected["top_k"]]
    assert _bars(page)[0][0] == "siren"  # the head's bias made it win: the classifier agrees
    assert _text(page, "model-info").startswith("cnn_tiny · 3 labels · 16000 Hz")
    assert _text(page, "score-note").startswith("Single-label: softmax")

    drawn, total, colours = _pixels(page, "spectrogram")
    assert drawn > 0.5 * total and colours > 50, (drawn, total, colours)
    timeline_hidden = page.execute_script("return document.getElementById('timeline-card').hidden")
    assert timeline_hidden  # one clip: no timeline
    _no_script_errors(page)

    shot = tmp_path / "page.png"
    assert page.save_screenshot(str(shot))
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    view = page.execute_script("return [innerWidth * devicePixelRatio, innerHeight * devicePixelRatio]")
    assert (width, height) == tuple(round(v) for v in view) and width == 1280


def test_a_long_file_gets_a_timeline_of_its_windows(page, files, tmp_path):
    expected, windows = _expected(files["checkpoint"], files["long"])
    assert len(windows) > 4
    assert _upload(page, files["long"]) == "done", _text(page, "error")
    assert _bars(page) == expected
    assert not page.execute_script("return document.getElementById('timeline-card').hidden")
    assert f"{len(windows)} windows" in _text(page, "timeline-title")
    rows = json.loads(page.execute_script("return document.getElementById('timeline').dataset.rows"))
    assert rows == [label for label, _ in expected]
    drawn, total, colours = _pixels(page, "timeline")
    assert drawn > 0.3 * total and colours > 10, (drawn, total, colours)
    _no_script_errors(page)
    page.save_screenshot(str(tmp_path / "timeline.png"))


def test_a_service_error_is_one_readable_line(page, files):
    assert _upload(page, files["bad"]) == "error"
    message = _text(page, "error")
    assert message and "\n" not in message and "Traceback" not in message
    assert page.find_element("id", "error").is_displayed()
    assert not page.find_element("id", "results").is_displayed()  # no earlier answer beside the error
    assert "broken.wav" in message or "audio" in message.lower(), message


def test_the_key_is_asked_for_and_a_wrong_one_refused(driver, url, page):
    first = driver.current_window_handle
    driver.switch_to.new_window("tab")  # a new tab: its own sessionStorage, no key yet
    try:
        driver.get(f"{url}/")
        _enter_key(driver, "wrong")
        _wait(driver, lambda d: "refused" in _text(d, "error"), "the refusal of a wrong key")
        assert _text(driver, "model-info") == "This service needs an API key."
        _enter_key(driver, KEY)
        _wait(driver, lambda d: _text(d, "status").startswith("Ready"), "'Ready' once the key is right")
        assert not driver.execute_script("return document.getElementById('key-change').hidden")
    finally:
        driver.close()
        driver.switch_to.window(first)


def test_a_recording_is_sent_as_a_wav_and_scored_as_classify_scores_it(page, files, tmp_path):
    """Record from the (fake) microphone until the page has a second of audio, stop: the WAV the page made
    (read back through its save link) is a valid file whose classifier scores are the bars shown."""
    import base64

    page.find_element("id", "record").click()
    _wait(page, lambda d: _text(d, "error") or d.execute_script(RECORDED) >= 1.0, "a second of recording")
    assert not _text(page, "error")
    page.execute_script("document.getElementById('results').dataset.state = 'idle'")
    page.find_element("id", "stop").click()
    state = _wait(page, lambda d: d.execute_script(STATE), "the recording's answer")
    assert state == "done", _text(page, "error")
    assert _text(page, "result-title").startswith("· recording-")
    data = page.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(document.getElementById('recording-link').href).then((r) => r.blob()).then((b) => {
          const f = new FileReader();
          f.onload = () => done(f.result.split(',')[1]);
          f.readAsDataURL(b);
        });"""
    )
    wav = tmp_path / "recording.wav"
    wav.write_bytes(base64.b64decode(data))
    audio, rate = sf.read(wav, dtype="float32")
    assert audio.ndim == 1 and len(audio) >= rate and np.abs(audio).max() > 0.01  # mono, >= 1 s, not silence
    assert _bars(page) == _expected(files["checkpoint"], wav)[0]
    _no_script_errors(page)


def test_the_page_is_self_contained():
    """It works offline: every file index.html and the scripts load is in the package's static folder, every
    file there is used, and nothing names another origin (no CDN, no web font)."""
    texts = {p.name: p.read_text(encoding="utf-8") for p in STATIC.iterdir()}
    assert {"index.html", "app.js", "style.css"} <= set(texts)
    used = set()
    for text in texts.values():
        used |= set(re.findall(r'(?:src|href)="/static/([\w.-]+)"', text))
        used |= set(re.findall(r'from "\./([\w.-]+)"', text))
        used |= set(re.findall(r'addModule\("/static/([\w.-]+)"\)', text))
    assert used == set(texts) - {"index.html"}
    for name, text in texts.items():
        assert not re.search(r"https?://|url\(|@import|//cdn", text), name
