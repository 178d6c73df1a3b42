"""``sedkit serve`` end to end: one server (a tiny frame model, an API key, small limits) for the module,
on a free loopback port; every answer is held to what ``classify`` / ``detect`` / ``stream`` give the same
audio."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from sed import save_model
from sed.inference.classifier import Classifier
from sed.inference.detect import Detector
from sed.inference.stream import stream
from sed.models import create_model
from tests.serve.helpers import multipart, raw_exchange, running_server

KEY = "s3cret-key"
AUTH = {"X-API-Key": KEY}
LABELS = ["dog", "rain", "siren", "bird"]
N_CONCURRENT = 16
PAGE = "http://page.example"  # the one origin CORS allows


def _tone(freq: float, seconds: float, sr: int = 16000, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t) + noise * np.random.default_rng(seed).standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=len(LABELS), frame_pooling="attention")
    with torch.no_grad():  # peaky scores, so that different audio gets clearly different answers
        model.frame_head.dense.weight.mul_(20)
    ckpt = save_model(tmp / "frames.pt", model, labels=LABELS)
    files = {"a.wav": tmp / "a.wav", "b.flac": tmp / "b.flac"}
    sf.write(files["a.wav"], _tone(2000, 2.0), 16000)
    stereo = np.stack([_tone(300, 3.0, 22050, 0.1), _tone(5000, 3.0, 22050, 0.1, 1)], axis=1)
    sf.write(files["b.flac"], stereo, 22050)  # resampled and down-mixed, as classify reads it
    sf.write(tmp / "long.wav", _tone(440, 6.0), 16000)  # past --max-seconds 5
    many = []
    for i in range(N_CONCURRENT):
        many.append(tmp / f"c{i:02d}.wav")
        sf.write(many[-1], _tone(200 + 450 * i, 0.5 + 0.05 * i, noise=0.02 * (i % 4), seed=i), 16000)
    args = ["--checkpoint", str(ckpt), "--api-key", KEY, "--device", "cpu", "--batch-timeout", "0.3"]
    args += ["--max-upload-mb", "1", "--max-seconds", "5", "--max-batch-size", str(N_CONCURRENT)]
    args += ["--cors-origin", PAGE]
    with running_server(args, tmp / "server.log") as server:
        yield {"server": server, "ckpt": ckpt, "files": files, "many": many, "tmp": tmp}


@pytest.fixture(scope="module")
def clf(setup):
    return Classifier.from_pretrained(setup["ckpt"], device="cpu")


def _post(server, path, body, headers=None, **kw):
    return server.request("POST", path, body, {**AUTH, **(headers or {})}, **kw)


def _same(got, want, tol=1e-5):
    assert [g["label"] for g in got] == [w["label"] for w in want]
    np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=tol, rtol=0)


@pytest.mark.parametrize("name", ["a.wav", "b.flac"])
def test_three_input_forms_give_classify_scores(setup, clf, name):
    path, server = setup["files"][name], setup["server"]
    want = clf.predict([path], top_k=3)[0]["top_k"]
    data = path.read_bytes()
    body, headers = multipart(data, name, {"top_k": "3"})
    answers = [
        _post(server, "/predict", body, headers),
        _post(server, "/predict?top_k=3", data, {"Content-Type": "audio/flac"}),
        _post(
            server,
            "/predict",
            json.dumps({"inputs": base64.b64encode(data).decode(), "parameters": {"top_k": 3}}).encode(),
            {"Content-Type": "application/json"},
        ),
    ]
    for status, got, _ in answers:
        assert status == 200, got
        _same(got, want)


def test_function_to_apply(setup, clf):
    path, server = setup["files"]["a.wav"], setup["server"]
    got = {}
    for fn in ("softmax", "sigmoid", "none"):
        status, got[fn], _ = _post(
            server,
            f"/predict?top_k=4&function_to_apply={fn}",
            path.read_bytes(),
            {"Content-Type": "audio/wav"},
        )
        assert status == 200
    _same(got["softmax"], clf.predict([path], top_k=4, multi_label=False)[0]["top_k"])
    _same(got["sigmoid"], clf.predict([path], top_k=4, multi_label=True)[0]["top_k"])
    logits = {g["label"]: g["score"] for g in got["none"]}  # the logits themselves: sigmoid gives the above
    for g in got["sigmoid"]:
        assert 1 / (1 + np.exp(-logits[g["label"]])) == pytest.approx(g["score"], abs=1e-5)
    assert min(logits.values()) < 0 or max(logits.values()) > 1  # not probabilities


def test_window_rows_are_classify_windows(setup, clf):
    path, server = setup["files"]["b.flac"], setup["server"]
    status, got, _ = _post(
        server, "/predict?window=1&hop=0.5&top_k=2", path.read_bytes(), {"Content-Type": "audio/flac"}
    )
    assert status == 200, got
    want = clf.predict([path], top_k=2, window=1.0, hop=0.5)[0]
    assert got["duration"] == pytest.approx(3.0, abs=1e-3)
    _same(got["labels"], want["top_k"])
    assert len(got["windows"]) == len(want["windows"]) == 5
    for g, w in zip(got["windows"], want["windows"]):
        assert (g["start"], g["end"]) == pytest.approx((w["start"], w["end"]), abs=1e-6)
        _same(g["labels"], w["top_k"])


def test_detect_events_are_the_detectors(setup, clf):
    path, server = setup["files"]["b.flac"], setup["server"]
    body, headers = multipart(
        path.read_bytes(), "b.flac", {"detect": "true", "threshold": "0.3", "median": "0.5"}
    )
    status, got, _ = _post(server, "/predict", body, headers)
    assert status == 200, got
    det = next(iter(Detector(clf.model, clf.meta, device="cpu").detect([path], thresholds=0.3, median=0.5)))
    want = [{"onset": round(a, 6), "offset": round(b, 6), "label": lab} for a, b, lab in det.events]
    assert want, "the toy model should find some event at threshold 0.3"
    assert got["events"] == want
    assert "windows" not in got and "spectrogram" not in got


def test_spectrogram_shows_the_tone(setup):
    path, server = setup["files"]["a.wav"], setup["server"]  # a 2 kHz tone, 2 s, 16 kHz
    status, got, _ = _post(
        server, "/predict?spectrogram=true", path.read_bytes(), {"Content-Type": "audio/wav"}
    )
    assert status == 200, got
    spec = got["spectrogram"]
    rows = np.array(spec["rows"])
    assert rows.ndim == 2 and 1 < rows.shape[0] <= 128 and 1 < rows.shape[1] <= 1000
    assert rows.min() >= 0 and rows.max() == 255
    assert spec["max_hz"] == 8000
    assert spec["db_range"][1] - spec["db_range"][0] == pytest.approx(80)
    assert rows.shape[1] * spec["seconds_per_column"] == pytest.approx(2.0, rel=0.1)
    loudest = int(np.argmax(rows.mean(axis=1)))  # low frequency first: the 2 kHz row is a quarter up
    assert loudest == pytest.approx(2000 / 8000 * rows.shape[0], abs=1.5)


def _error(status, got, code):
    assert status == code, got
    assert set(got) == {"error"} and "\n" not in got["error"] and "Traceback" not in got["error"]
    return got["error"]


def test_refusals_are_one_line_json(setup):
    server, tmp = setup["server"], setup["tmp"]
    wav = setup["files"]["a.wav"].read_bytes()
    body, headers = multipart(b"this is not audio at all" * 10, "notes.wav")
    assert "notes.wav" in _error(*_post(server, "/predict", body, headers)[:2], 400)
    # too large: refused by its Content-Length before any body byte is read, or (chunked, no length) as soon
    # as more than the limit has come
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: audio/wav\r\n"
    assert "max 1 MB" in _error(*raw_exchange(server, head + f"Content-Length: {2**20 + 1}"), 413)
    limit = 2**20
    chunks = b"".join(b"%x\r\n%s\r\n" % (n, b"\0" * n) for n in (limit // 2, limit // 2, 1))
    _error(*raw_exchange(server, head + "Transfer-Encoding: chunked", chunks), 413)
    long = (tmp / "long.wav").read_bytes()
    msg = _error(*_post(server, "/predict", long, {"Content-Type": "audio/wav"})[:2], 400)
    assert "6.0 s is longer than the service takes (max 5 s)" in msg
    assert "top_k" in _error(
        *_post(server, "/predict?top_k=many", wav, {"Content-Type": "audio/wav"})[:2], 400
    )
    assert "nope" in _error(*_post(server, "/predict?nope=1", wav, {"Content-Type": "audio/wav"})[:2], 400)
    assert "base64" in _error(
        *_post(server, "/predict", b'{"inputs": "%%%"}', {"Content-Type": "application/json"})[:2], 400
    )
    _error(*_post(server, "/predict", b"x", {"Content-Type": "text/plain"})[:2], 415)
    # the key: missing, wrong, and as a bearer token
    assert "API key" in _error(
        *server.request("POST", "/predict", wav, {"Content-Type": "audio/wav"})[:2], 401
    )
    _error(*server.request("GET", "/info", None, {"X-API-Key": "wrong"})[:2], 401)
    _error(*server.request("GET", "/stats")[:2], 401)
    assert server.request("GET", "/info", None, {"Authorization": f"Bearer {KEY}"})[0] == 200
    assert server.request("GET", "/health")[:2] == (200, {"status": "ok"})  # no key needed


def test_static_serves_its_folder_only(setup):
    server = setup["server"]
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapi.py", "/static//etc/passwd"):
        status, got = raw_exchange(server, f"GET {path} HTTP/1.1\r\nHost: x")
        assert status == 404 and set(got) == {"error"}, path


def test_info_and_cors_for_the_given_origin_only(setup):
    server = setup["server"]
    status, info, headers = server.request("GET", "/info", None, {**AUTH, "Origin": "http://evil.example"})
    assert status == 200
    assert info["labels"] == LABELS and info["sample_rate"] == 16000 and info["multi_label"] is True
    assert info["model_name"] == "cnn_tiny" and info["frame_hop"] > 0
    assert info["serve"] == {
        "max_upload_mb": 1.0,
        "max_seconds": 5.0,
        "max_batch_size": N_CONCURRENT,
        "batch_timeout": 0.3,
        "workers": 1,
        "detect": True,
        "api_key": True,
    }
    assert "access-control-allow-origin" not in {k.lower() for k in headers}
    headers = server.request("GET", "/info", None, {**AUTH, "Origin": PAGE})[2]
    assert headers["access-control-allow-origin"] == PAGE


def test_concurrent_requests_are_batched_and_answered_each(setup, clf):
    server, files = setup["server"], setup["many"]
    want = [r["top_k"] for r in clf.predict(files, top_k=4)]
    for i in range(len(want)):  # the answers tell the files apart
        for j in range(i):
            a = np.array(sorted((w["label"], w["score"]) for w in want[i]), dtype=object)[:, 1].astype(float)
            b = np.array(sorted((w["label"], w["score"]) for w in want[j]), dtype=object)[:, 1].astype(float)
            assert np.abs(a - b).max() > 1e-3
    before = server.request("GET", "/stats", None, AUTH)[1]
    barrier, got = threading.Barrier(len(files)), [None] * len(files)

    def client(i):
        barrier.wait()
        got[i] = _post(server, "/predict?top_k=4", files[i].read_bytes(), {"Content-Type": "audio/wav"})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for i, (status, answer, _) in enumerate(got):
        assert status == 200, answer
        _same(answer, want[i])
    after = server.request("GET", "/stats", None, AUTH)[1]
    assert after["requests"] - before["requests"] == len(files)
    new = {int(k): v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    assert sum(k * v for k, v in new.items()) == len(files)
    assert max(k for k, v in new.items() if v) > 1  # some requests went through the model together


def _ws_rows(server, query, chunks):
    import websocket

    ws = websocket.create_connection(server.url.replace("http", "ws") + "/stream?" + query, timeout=120)
    rows = []
    try:
        for c in chunks:
            ws.send_binary(c)
        ws.send("end")
        while True:
            op, data = ws.recv_data()
            if op == websocket.ABNF.OPCODE_CLOSE:
                return rows, int.from_bytes(data[:2], "big")
            rows.append(json.loads(data))
    finally:
        ws.close()


def test_websocket_stream_equals_sedkit_stream(setup, clf):
    wave = _tone(700, 1.3, noise=0.05)
    want = list(stream(clf, [wave], hop=0.5, top_k=3))
    raw = wave.astype("<f4").tobytes()
    chunks = [raw[i : i + 3001] for i in range(0, len(raw), 3001)]  # split inside samples on purpose
    rows, code = _ws_rows(setup["server"], f"hop=0.5&top_k=3&api_key={KEY}", chunks)
    assert code == 1000 and [r["time"] for r in rows] == [w["time"] for w in want] == [0.5, 1.0, 1.3]
    for r, w in zip(rows, want):
        _same(r["top_k"], w["top_k"])
    pcm = np.clip(np.round(wave * 32768), -32768, 32767).astype("<i2")
    rows16, _ = _ws_rows(setup["server"], f"hop=0.5&top_k=3&format=s16le&api_key={KEY}", [pcm.tobytes()])
    want16 = list(stream(clf, [pcm.astype(np.float32) / 32768], hop=0.5, top_k=3))
    for r, w in zip(rows16, want16, strict=True):
        _same(r["top_k"], w["top_k"])


@pytest.mark.parametrize("query", ["hop=-1&api_key=" + KEY, "format=mp3&api_key=" + KEY, "hop=0.5"])
def test_websocket_refusals(setup, query):
    rows, code = _ws_rows(setup["server"], query, [])
    assert code == 1008 and len(rows) == 1 and set(rows[0]) == {"error"}


def test_host_beyond_loopback_needs_a_key(setup):
    r = subprocess.run(
        [sys.executable, "-m", "sed", "serve", "--checkpoint", str(setup["ckpt"]), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in __import__("os").environ.items() if k != "SED_API_KEY"},
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --host 0.0.0.0") and "--api-key" in lines[0]


def test_a_port_in_use_is_one_usage_line(setup):
    port = setup["server"].url.rsplit(":", 1)[1]
    cmd = [sys.executable, "-m", "sed", "serve", "--checkpoint", str(setup["ckpt"]), "--port", port]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr == f"error: --port {port}: cannot listen on 127.0.0.1:{port} " + (
        "(Address already in use)\n"
    )


def test_sigterm_stops_it_cleanly(setup):  # last: it stops the module's server
    server = setup["server"]
    server.proc.terminate()
    assert server.proc.wait(timeout=60) == 0
    log = server.log.read_text()
    assert log.startswith("serving http://127.0.0.1:") and "Traceback" not in log, log
