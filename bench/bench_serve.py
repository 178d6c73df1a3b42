"""``sedkit serve`` under load on loopback: requests/s and latency, dynamic batching on vs off, fp32 vs int8.

For each method (``PRECISION:BATCH``; precision ``fp32``, ``int8`` = ``--precision int8`` on the PyTorch
checkpoint, ``onnx`` / ``onnx-int8`` = the file ``sedkit export [--precision int8]`` writes; batch = the
server's ``--max-batch-size``, 1 = batching off), the real command runs as a subprocess (``python -m sed
serve --checkpoint M --host 127.0.0.1 --port P --max-batch-size B --batch-timeout T --device cpu``, its own
process group, always stopped) on a free loopback port, with a checkpoint this script writes (``--model``:
a registry name, random weights, 10 classes). Once ``/health`` answers, ``--clients`` threads (each with
its own keep-alive connection) post synthetic ``--clip-seconds`` WAV clips (16-bit, the model's rate, made
in memory) as raw bodies (``Content-Type: audio/wav``) to ``/predict`` until ``--requests`` have been
answered; every answer must be a 200 with ``top_k`` labels. Reported per (method, clients): requests/s
(answers over the wall time from the first request to the last answer), p50/p99 latency, the mean batch
the server actually formed (``/stats`` before and after: requests over batches), the ratio to batch 1
of the same precision at the same number of clients, and the resident memory of the server process and
its worker children (VmRSS summed over the process tree) before and after.

``--soak N`` then sends N requests per method (``--soak-clients``, default 8) and samples that memory
every ``N/50`` answers: start, end, max and the growth from 10 % of the run to its end, a line per method.

    python bench/bench_serve.py --quick                        # seconds: cnn_tiny, a few requests
    python bench/bench_serve.py                                # the default model, 1/8/32 clients
    python bench/bench_serve.py --model ast_tiny --methods fp32:1,fp32:16 --clients 32
    python bench/bench_serve.py --methods fp32:16 --clients 8 --requests 0 --soak 10000 --json soak.json
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager, suppress
from itertools import product
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "int8", "onnx", "onnx-int8")


# ---------------------------------------- pure helpers (tests/serve/test_bench_serve.py)
def parse_methods(text: str) -> list[tuple[str, int]]:
    """``"fp32:1,fp32:16"`` -> ``[("fp32", 1), ("fp32", 16)]``; ValueError naming the bad item."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        prec, _, batch = item.partition(":")
        if prec not in PRECISIONS or not batch.isdigit() or int(batch) < 1:
            raise ValueError(
                f"method {item!r}: expected PRECISION:BATCH, PRECISION one of {', '.join(PRECISIONS)}"
            )
        out.append((prec, int(batch)))
    if not out:
        raise ValueError("no method given")
    return out


def summarize(latencies: list[float], wall: float) -> dict:
    """Requests/s and p50/p99 latency (ms; linear interpolation between order statistics)."""
    lat = np.asarray(latencies, dtype=float) * 1000
    return {
        "requests": int(lat.size),
        "rps": lat.size / wall if wall > 0 else float("nan"),
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
    }


def mean_batch(before: dict, after: dict) -> float:
    """The mean batch the server formed between two ``/stats`` answers."""
    batches = after["batches"] - before["batches"]
    return (after["requests"] - before["requests"]) / batches if batches else float("nan")


def add_ratios(rows: list[dict]) -> list[dict]:
    """Each row's ``ratio``: its requests/s over batch 1's of the same precision at the same clients."""
    base = {(r["precision"], r["clients"]): r["rps"] for r in rows if r["batch"] == 1 and "rps" in r}
    for r in rows:
        b = base.get((r["precision"], r["clients"]))
        r["ratio"] = r["rps"] / b if b and "rps" in r else None
    return rows


def _name(r: dict) -> str:
    return f"{r['precision']}, " + (f"batch {r['batch']}" if r["batch"] > 1 else "batching off")


def table(rows: list[dict]) -> str:
    """The markdown table of :func:`measure` rows (a failed row says why)."""
    lines = [
        "| method | clients | req/s | p50 (ms) | p99 (ms) | mean batch | vs batch 1 "
        "| RSS before → after (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {_name(r)} | {r['clients']} | failed: {r['error']} | | | | | |")
            continue
        ratio = f"{r['ratio']:.2f}×" if r.get("ratio") else "—"
        lines.append(
            f"| {_name(r)} | {r['clients']} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
            f"| {r['mean_batch']:.2f} | {ratio} | {r['rss_before_mb']:.0f} → {r['rss_after_mb']:.0f} |"
        )
    return "\n".join(lines)


def soak_table(soaks: list[dict]) -> str:
    """The markdown table of :func:`soak` lines: the server's memory over the run."""
    head = (
        "| method | clients | requests | req/s | server RSS start → end, max (MiB) | growth from 10 % (MiB) |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    for s in soaks:
        if "error" in s:
            lines.append(f"| {_name(s)} | {s['clients']} | failed: {s['error']} | | | |")
            continue
        lines.append(
            f"| {_name(s)} | {s['clients']} | {s['requests']} | {s['rps']:.1f} | {s['start']:.0f} → "
            f"{s['end']:.0f}, max {s['max']:.0f} ({s['processes']} proc.) | {s['growth_from_10pct']:+.0f} |"
        )
    return "\n".join(lines)


def memory_line(samples: list[tuple[int, float]]) -> dict:
    """start, end, max (MiB) of ``(answers so far, MiB)`` samples, and the growth from 10 % of the run."""
    mib = [m for _, m in samples]
    n = samples[-1][0]
    from_tenth = next(m for k, m in samples if k >= n / 10)
    return {"start": mib[0], "end": mib[-1], "max": max(mib), "growth_from_10pct": mib[-1] - from_tenth}


# ---------------------------------------------------------------- process tree memory
def _proc(pid: str, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except OSError:  # it ended meanwhile
        return ""


def tree_rss(pid: int) -> tuple[float, int]:
    """(VmRSS in MiB summed over ``pid`` and all its descendants, number of processes)."""
    kids: dict[str, list[str]] = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        stat = _proc(p, "stat").rpartition(")")[2].split()  # the name in (...) may hold spaces
        kids.setdefault(stat[1] if stat else "", []).append(p)
    todo, total, count = [str(pid)], 0, 0
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        for line in _proc(p, "status").splitlines():
            if line.startswith("VmRSS:"):
                total, count = total + int(line.split()[1]), count + 1
    return total / 1024, count


# ---------------------------------------------------------------- inputs
def write_checkpoint(model: str, folder: Path) -> tuple[Path, int]:
    """A random-weight ``model`` with 10 classes saved to ``folder``; (path, sample rate)."""
    import torch

    from sed.checkpoint import save_model
    from sed.models import create_model

    torch.manual_seed(0)
    net = create_model(model, num_classes=10)
    path = folder / f"{model}.pt"
    save_model(path, net, labels=[f"class{i}" for i in range(10)])
    return path, int(getattr(net, "sample_rate", 16000))


def export(ckpt: Path, precision: str) -> Path:
    """The ``.onnx`` file ``sedkit export`` writes for ``onnx`` / ``onnx-int8``."""
    out = ckpt.with_name(f"{ckpt.stem}-{precision}.onnx")
    prec = "int8" if precision == "onnx-int8" else "fp32"
    cmd = [sys.executable, "-m", "sed", "export", "--checkpoint", str(ckpt), "--out", str(out)]
    r = subprocess.run([*cmd, "--precision", prec], capture_output=True, text=True, env=_env(), timeout=1800)
    if r.returncode:
        raise RuntimeError(f"sedkit export: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return out


def clips(seconds: float, sr: int, count: int = 8) -> list[bytes]:
    """``count`` different 16-bit WAV files of ``seconds`` (synthetic events over pink noise), as bytes."""
    import soundfile as sf

    from sed.data.synth.signals import SIGNAL_KINDS, event_signal, pink_noise

    rng, n, out = np.random.default_rng(0), int(round(seconds * sr)), []
    kinds = sorted(SIGNAL_KINDS)
    for i in range(count):
        x = 0.3 * event_signal(kinds[i % len(kinds)], rng, n, sr) + 0.05 * pink_noise(rng, n, sr)
        buf = io.BytesIO()
        sf.write(buf, np.clip(x, -1, 1).astype(np.float32), sr, format="WAV", subtype="PCM_16")
        out.append(buf.getvalue())
    return out


def model_alone(file: Path, precision: str, sr: int, seconds: float, batch: int, rounds: int = 3) -> tuple:
    """Clips/s of the model itself (``Classifier.classify_batch`` in this process, no HTTP, no decoding) at
    batch 1 and at ``batch``, best of ``rounds``: the most batching can give the server."""
    import torch

    from sed.inference.classifier import Classifier

    clf = Classifier.from_pretrained(file, device="cpu", precision="int8" if precision == "int8" else "fp32")
    wave = 0.1 * torch.randn(batch, int(round(seconds * sr)), generator=torch.Generator().manual_seed(0))
    rates = []
    for b in (1, batch):
        clf.classify_batch(wave[:b])  # warm-up
        times = []
        for _ in range(rounds * batch // b):  # the same number of clips at each batch size
            t = time.perf_counter()
            clf.classify_batch(wave[:b])
            times.append(time.perf_counter() - t)
        rates.append(b / min(times))
    return tuple(rates)


# ---------------------------------------------------------------- the server
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")]))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@contextmanager
def server(ckpt: Path, batch: int, args, log: Path, precision: str = "fp32"):
    """``python -m sed serve`` on a free loopback port; yields (port, process); always stops it."""
    port = free_port()
    cmd = [sys.executable, "-m", "sed", "serve", "--checkpoint", str(ckpt), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--max-batch-size", str(batch), "--batch-timeout", str(args.batch_timeout)]
    cmd += ["--workers", str(args.workers), "--device", "cpu"]
    cmd += ["--precision", "int8"] if precision == "int8" else []
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + args.start_timeout
        while True:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines() or ["no output"]
                raise RuntimeError(f"the server exited ({proc.returncode}): {tail[-1][:200]}")
            try:
                if _get(port, "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no /health answer within {args.start_timeout:g} s")
            time.sleep(0.2)
        yield port, proc
    finally:  # SIGTERM to the process group; SIGKILL to whatever of it is left (workers included)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)


def stats(port: int) -> dict:
    status, body = _get(port, "/stats")
    if status != 200:
        raise RuntimeError(f"/stats answered {status}: {body[:200]!r}")
    return json.loads(body)


# ---------------------------------------------------------------- the load
def _post(conn: http.client.HTTPConnection, body: bytes, top_k: int) -> str | None:
    """One raw-body ``/predict``: None, or what was wrong with its answer."""
    try:
        conn.request("POST", f"/predict?top_k={top_k}", body=body, headers={"Content-Type": "audio/wav"})
        r = conn.getresponse()
        answer = r.read()
    except (OSError, http.client.HTTPException) as e:
        conn.close()  # the next request opens a new connection
        return f"{type(e).__name__}: {e}"
    if r.status != 200:
        return f"HTTP {r.status}: {answer[:200].decode(errors='replace')}"
    try:
        return None if len(json.loads(answer)) == top_k else f"not {top_k} labels: {answer[:200]!r}"
    except ValueError:
        return f"not JSON: {answer[:200]!r}"


def load(port: int, bodies: list[bytes], clients: int, requests: int, on_answer=None, top_k: int = 3) -> dict:
    """``requests`` POSTs by ``clients`` threads, each on its own keep-alive connection: latencies (s) of
    the answered ones, wall time, errors. ``on_answer(n)`` runs after the n-th answer."""
    lock, barrier = threading.Lock(), threading.Barrier(clients + 1)
    state = {"next": 0, "done": 0, "errors": 0, "first_error": None, "end": 0.0, "latencies": []}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        barrier.wait()
        while True:
            with lock:
                i, state["next"] = state["next"], state["next"] + 1
            if i >= requests:
                return conn.close()
            t = time.perf_counter()
            error = _post(conn, bodies[i % len(bodies)], top_k)
            latency = time.perf_counter() - t
            with lock:
                state["errors"] += error is not None
                state["first_error"] = state["first_error"] or error
                state["latencies"] += [] if error else [latency]
                state["done"] += 1
                done, state["end"] = state["done"], time.perf_counter()
            if on_answer:
                on_answer(done)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for th in threads:
        th.start()
    barrier.wait()
    start = time.perf_counter()
    for th in threads:
        th.join()
    if state["errors"]:
        raise RuntimeError(f"{state['errors']} of {requests} requests failed, first: {state['first_error']}")
    return {**summarize(state["latencies"], state["end"] - start)}


def measure(port: int, proc, bodies, clients: int, requests: int, samples: int = 0) -> dict:
    """:func:`load` after a warm-up, with what ``/stats`` saw and the server's memory before and after (and
    at ``samples`` points in between: :func:`memory_line`)."""
    load(port, bodies, clients, max(clients, 2))  # warm-up: first batches, lazy allocations
    before, memory = stats(port), [(0, tree_rss(proc.pid)[0])]
    every = max(1, requests // samples) if samples else requests + 1

    def sample(done: int) -> None:
        if done % every == 0:
            memory.append((done, tree_rss(proc.pid)[0]))

    run = load(port, bodies, clients, requests, on_answer=sample)
    after = stats(port)
    memory = sorted([*memory, (requests, tree_rss(proc.pid)[0])])
    sizes = {k: v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    return {
        **run,
        "mean_batch": mean_batch(before, after),
        "batch_sizes": {k: v for k, v in sizes.items() if v},
        "rss_before_mb": memory[0][1],
        "rss_after_mb": memory[-1][1],
        "processes": tree_rss(proc.pid)[1],
        **({**memory_line(memory), "samples": memory} if samples else {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="efficientat_mn10", help="a registry name (random weights, 10 classes)")
    p.add_argument("--methods", default="fp32:1,fp32:16,int8:1,int8:16", help="PRECISION:MAX_BATCH,...")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--requests", type=int, default=256, help="per method and number of clients (0: none)")
    p.add_argument("--clip-seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each is reported")
    p.add_argument("--batch-timeout", type=float, default=0.01)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--soak", type=int, default=0, help="N requests per method, memory sampled every N/50")
    p.add_argument("--soak-clients", type=int, default=8)
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for /health")
    p.add_argument("--quick", action="store_true", help="cnn_tiny, 1 s clips, 1 and 8 clients, 24 requests")
    p.add_argument(
        "--no-model-alone", dest="model_alone", action="store_false", help="skip the in-process model"
    )
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))  # the sed beside this script, as in the server's PYTHONPATH
    if args.quick:
        args.model, args.clip_seconds, args.clients, args.requests = "cnn_tiny", 1.0, "1,8", 24
        args.rounds = 1
        args.methods = "fp32:1,fp32:8"
    methods, clients = parse_methods(args.methods), [int(c) for c in args.clients.split(",") if c]
    alone = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt, sr = write_checkpoint(args.model, tmp)
        bodies, files = clips(args.clip_seconds, sr), {"fp32": ckpt, "int8": ckpt}
        print(
            f"model {args.model} (random weights), {args.clip_seconds:g} s clips at {sr} Hz, "
            f"batch timeout {args.batch_timeout:g} s, {args.workers} worker(s), {os.cpu_count()} CPUs",
            flush=True,
        )
        for prec, batch in methods:
            if prec not in files:
                files[prec] = export(ckpt, prec)
            if batch > 1 and args.model_alone:
                one, many = alone[f"{prec}:{batch}"] = model_alone(
                    files[prec], prec, sr, args.clip_seconds, batch
                )
                print(f"model alone, {prec}: {one:.1f} clips/s at batch 1, {many:.1f} at batch {batch} "
                      f"({many / one:.2f}×)", flush=True)  # fmt: skip
        rows, soaks = run_all(methods, files, args, clients if args.requests else [], bodies, tmp)
    print("\n" + table(rows))
    if soaks:
        print("\n" + soak_table(soaks))
    if args.json:
        out = {"args": vars(args), "rows": rows, "soak": soaks, "model_alone": alone}
        args.json.write_text(json.dumps(out, indent=1, default=str))


def run_all(methods, files, args, clients, bodies, tmp: Path) -> tuple[list[dict], list[dict]]:
    """One server per method, all alive at once; ``--rounds`` rounds of (clients x methods), interleaved so
    that a change in the machine's load hits every method alike; the best round of each; then the soaks."""
    best: dict[tuple, dict] = {}
    soaks, live = [], {}
    with ExitStack() as stack:
        for prec, batch in methods:
            log = tmp / f"server-{prec}-{batch}.log"
            try:
                live[prec, batch] = stack.enter_context(server(files[prec], batch, args, log, prec))
            except RuntimeError as e:
                best[prec, batch, "all"] = {
                    "precision": prec,
                    "batch": batch,
                    "clients": "all",
                    "error": str(e),
                }
        for rnd, c, ((prec, batch), (port, proc)) in product(range(args.rounds), clients, live.items()):
            row = {"precision": prec, "batch": batch, "clients": c, "round": rnd + 1}
            try:
                row.update(measure(port, proc, bodies, c, args.requests))
            except RuntimeError as e:
                row["error"] = str(e)
            print(table([row]).splitlines()[-1] + f" round {rnd + 1}", flush=True)
            old = best.get((prec, batch, c))
            if old is None or "error" in old or row.get("rps", -1) > old["rps"]:
                best[prec, batch, c] = row
        for (prec, batch), (port, proc) in live.items() if args.soak else ():
            row = {"precision": prec, "batch": batch, "clients": args.soak_clients}
            try:
                row.update(measure(port, proc, bodies, args.soak_clients, args.soak, samples=50))
            except RuntimeError as e:
                row["error"] = str(e)
            soaks.append(row)
            print(soak_table([row]).splitlines()[-1], flush=True)
    return add_ratios(
        sorted(best.values(), key=lambda r: (str(r["clients"]).zfill(5), r["precision"], r["batch"]))
    ), soaks


if __name__ == "__main__":
    main()
