"""``sedkit serve`` under load on loopback: requests/s and latency, dynamic batching on vs off, fp32 vs int8.

A method is ``PRECISION:BATCH``: ``fp32``, ``int8`` (``--precision int8``), ``onnx`` / ``onnx-int8`` (the
file ``sedkit export [--precision int8]`` writes); batch = ``--max-batch-size`` (1: batching off). For a
random-weight checkpoint of ``--model``, the real command runs for every method, all at once, each in its
own process group on a free loopback port (waited for on ``/health``, always stopped). ``--clients``
threads with keep-alive connections post synthetic ``--clip-seconds`` WAV clips as raw bodies to
``/predict``; every answer must be a 200 with ``top_k`` labels. ``--rounds`` interleave the methods (a
shared machine's load hits all alike); the best round of each is reported: requests/s, p50/p99 latency,
the mean batch ``/stats`` counted, the ratio to batch 1 of the same precision and clients, and the RSS
summed over the server's process tree. Before that, the model and the server's worker code are timed in
this process without HTTP, one by one and batched (what batching can give at most); ``--soak N`` then
sends N requests per method and samples the memory every N/50 answers (docs/benchmarks.md#serving).

    python bench/bench_serve.py --quick                        # a minute or two: cnn_tiny, 1 s clips
    python bench/bench_serve.py --threads 1                    # ced_mini, 5 s clips, 1/8/32 clients
    python bench/bench_serve.py --model cnn_tiny --methods fp32:1,fp32:16,onnx-int8:1,onnx-int8:16
    python bench/bench_serve.py --methods fp32:1,fp32:16 --requests 0 --soak 10000 --json soak.json
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
    """The markdown table of the soak rows (:func:`measure` with samples): the memory over the run."""
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


def alone(file: Path, precision: str, bodies: list[bytes], batch: int, rounds: int = 3) -> dict:
    """Clips/s without HTTP, in this process, one by one (``b1``) and as one batch of ``batch`` (``bN``): of
    the model alone (``Classifier.classify_batch`` on waveforms) and of the server's worker (its
    :class:`~sed.serve.api.SedAPI`: decode the upload, score it, answer); ``batch`` clips each way,
    interleaved, best of ``rounds``. The most batching can give the server, and where its time goes."""
    import soundfile as sf
    import torch

    from sed.serve.api import SedAPI

    prec = "int8" if precision == "int8" else "fp32"
    api = SedAPI({"checkpoints": [str(file)], "device": "cpu", "precision": prec}, 600, max_batch_size=batch)
    api.setup("cpu")
    uploads = [
        {"name": "a.wav", "data": bodies[i % len(bodies)], "params": {"top_k": 3}} for i in range(batch)
    ]
    wave = torch.from_numpy(np.stack([sf.read(io.BytesIO(u["data"]), dtype="float32")[0] for u in uploads]))
    runs = {
        "model_b1": lambda: [api.clf.classify_batch(w) for w in wave.split(1)],
        "model_bN": lambda: api.clf.classify_batch(wave),
        "worker_b1": lambda: [api.predict([api.decode_request(u)]) for u in uploads],
        "worker_bN": lambda: api.predict([api.decode_request(u) for u in uploads]),
    }
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(
        rounds + 1
    ):  # the first round warms up (predict removes each upload's file after its batch)
        for key, fn in runs.items():
            t = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t)
    return {key: batch / t for key, t in best.items()}


# ---------------------------------------------------------------- the server
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")]))}


def set_threads(n: int | None) -> None:
    """``--threads``: torch's threads here and (OMP_NUM_THREADS, inherited) in the servers."""
    if n:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(n)
        torch.set_num_threads(n)


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
    p.add_argument("--model", default="ced_mini", help="a registry name (random weights, 10 classes)")
    p.add_argument("--methods", default="fp32:1,fp32:16,int8:1,int8:16", help="PRECISION:MAX_BATCH,...")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--requests", type=int, default=256, help="per method and number of clients (0: none)")
    p.add_argument("--clip-seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each is reported")
    p.add_argument("--batch-timeout", type=float, default=0.01)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    p.add_argument("--soak", type=int, default=0, help="N requests per method, memory sampled every N/50")
    p.add_argument("--soak-clients", type=int, default=8)
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for /health")
    p.add_argument("--quick", action="store_true", help="cnn_tiny, 1 s clips, 1 and 8 clients, 24 requests")
    p.add_argument(
        "--no-alone", dest="alone", action="store_false", help="skip the model and worker without HTTP"
    )
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))  # the sed beside this script, as in the server's PYTHONPATH
    if args.quick:
        args.model, args.clip_seconds, args.clients, args.requests = "cnn_tiny", 1.0, "1,8", 24
        args.rounds = 1
        args.methods = "fp32:1,fp32:8"
    methods, clients = parse_methods(args.methods), [int(c) for c in args.clients.split(",") if c]
    set_threads(args.threads)
    without_http = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt, sr = write_checkpoint(args.model, tmp)
        bodies, files = clips(args.clip_seconds, sr), {"fp32": ckpt, "int8": ckpt}
        print(
            f"model {args.model} (random weights), {args.clip_seconds:g} s clips at {sr} Hz, "
            f"batch timeout {args.batch_timeout:g} s, {args.workers} worker(s), {os.cpu_count()} CPUs, "
            f"{args.threads or 'default'} torch threads",
            flush=True,
        )
        for prec, batch in methods:
            if prec not in files:
                files[prec] = export(ckpt, prec)
            if batch > 1 and args.alone:
                r = without_http[f"{prec}:{batch}"] = alone(files[prec], prec, bodies, batch)
                print(f"without HTTP, {prec}, clips/s one by one -> batch {batch}: model "
                      f"{r['model_b1']:.1f} -> {r['model_bN']:.1f} ({r['model_bN'] / r['model_b1']:.2f}×), "
                      f"worker {r['worker_b1']:.1f} -> {r['worker_bN']:.1f} "
                      f"({r['worker_bN'] / r['worker_b1']:.2f}×)", flush=True)  # fmt: skip
        rows, soaks = run_all(methods, files, args, clients if args.requests else [], bodies, tmp)
    print("\n" + table(rows))
    if soaks:
        print("\n" + soak_table(soaks))
    if args.json:
        out = {"args": vars(args), "rows": rows, "soak": soaks, "without_http": without_http}
        args.json.write_text(json.dumps(out, indent=1, default=str))


def _attempt(row: dict, fn, *args, **kwargs) -> dict:
    try:
        row.update(fn(*args, **kwargs))
    except RuntimeError as e:
        row["error"] = str(e)
    return row


def run_all(methods, files, args, clients, bodies, tmp: Path) -> tuple[list[dict], list[dict]]:
    """One server per method, all alive at once; ``--rounds`` rounds of (clients x methods), interleaved so
    that a change in the machine's load hits every method alike; the best round of each; then the soaks."""
    best, soaks, live = {}, [], {}
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
            row = {"precision": prec, "batch": batch, "clients": c}
            _attempt(row, measure, port, proc, bodies, c, args.requests)
            print(table([row]).splitlines()[-1] + f" round {rnd + 1}", flush=True)
            old = best.get((prec, batch, c))
            if old is None or "error" in old or row.get("rps", -1) > old["rps"]:
                best[prec, batch, c] = row
        for (prec, batch), (port, proc) in live.items() if args.soak else ():
            row = {"precision": prec, "batch": batch, "clients": args.soak_clients}
            soaks.append(_attempt(row, measure, port, proc, bodies, args.soak_clients, args.soak, 50))
            print(soak_table(soaks[-1:]).splitlines()[-1], flush=True)
    order = sorted(best.values(), key=lambda r: (str(r["clients"]).zfill(5), r["precision"], r["batch"]))
    return add_ratios(order), soaks


if __name__ == "__main__":
    main()
