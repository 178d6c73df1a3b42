"""``sedkit stream`` over a long live input: per-hop cost and resident memory, causal vs sliding window.

For each model (random weights saved with ``sed.checkpoint.save_model`` to a temporary folder), the
real command runs in a subprocess (``python -m sed stream --checkpoint M --format f32 --rate 16000
--hop H``) while this script writes ``--minutes`` of synthetic 16 kHz float32 audio to its stdin in
small chunks, as fast as the pipe takes them (no file on disk). ``--timing`` makes every JSON line
carry ``ms``, the time the command computed for that hop (model and buffers, not waiting for
input): its median, p99 and max are hop_ms; wall_ms_mean is the mean wall time between lines
(reading and decoding included). The hops until a full clip has arrived (and 2 more) are left
out (``--warmup``): every earlier window has a new length. A thread samples the process's VmRSS from
/proc/<pid>/status every 0.25 s: at the first line (model loaded, buffers full soon after), at the
end of the input, the maximum while it streams (first to last line), and the growth from 10 % of
the run to its last line.

With ``--realtime`` the audio is written at real-time pace (a live microphone) and hop_ms is the
latency from the write that delivers a hop's last sample to that hop's JSON line.

    python bench/bench_stream.py                     # 60 minutes of audio per model
    python bench/bench_stream.py --minutes 5         # a quick look
    python bench/bench_stream.py --minutes 2 --realtime   # true latency, 2 minutes of wall time per model
    python bench/bench_stream.py --models tcn_small,cnn_tiny,ast_micro --hop 0.25 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SR = 16000
ROOT = Path(__file__).resolve().parents[1]


def _command(ckpt: Path, hop: float, threads: int | None) -> list[str]:
    args = [
        "stream",
        "--checkpoint",
        str(ckpt),
        "--format",
        "f32",
        "--rate",
        str(SR),
        "--hop",
        str(hop),
        "--top-k",
        "3",
        "--device",
        "cpu",
        "--timing",
        *(["--threads", str(threads)] if threads else []),
    ]
    return [sys.executable, "-m", "sed", *args]


def _rss_kib(pid: int, key: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _audio_pool(seconds: int = 20, seed: int = 0) -> bytes:
    """``seconds`` of float32 modulated noise and tones, cycled to make any length."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    pool = []
    for i in range(seconds):
        x = 0.1 * rng.standard_normal(SR) * (1 + np.sin(2 * np.pi * (0.3 + 0.1 * i) * t))
        x += 0.2 * np.sin(2 * np.pi * (200 + 97 * i) * t) * (i % 3 == 0)
        pool.append(np.clip(x, -1, 1).astype("<f4").tobytes())
    return b"".join(pool)


def _lines(fd: int):
    """(arrival time, line) of every line the child writes, read unbuffered so that each gets its own time."""
    rest = b""
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            return
        now = time.perf_counter()
        *done, rest = (rest + data).split(b"\n")
        for line in done:
            yield now, line


def run_one(
    name: str,
    ckpt: Path,
    minutes: float,
    hop: float,
    chunk: float,
    warmup: int,
    realtime: bool = False,
    threads: int | None = None,
) -> dict:
    proc = subprocess.Popen(
        _command(ckpt, hop, threads),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    pool, total = _audio_pool(), int(round(minutes * 60 * SR))
    per = max(1, int(round(chunk * SR))) * 4
    state = {"lines": 0, "done_writing": False, "rss": [], "end_rss": None}
    written: list[tuple[int, float]] = []  # (samples written, time the write returned), --realtime only

    def write() -> None:
        left, pos, t0 = total * 4, 0, time.perf_counter()
        try:
            while left > 0:
                piece = pool[pos : pos + min(per, left)]  # shorter where the pool wraps round
                if realtime:  # a live source: each chunk when its audio would have been recorded
                    due = t0 + (total * 4 - left + len(piece)) / 4 / SR
                    time.sleep(max(0.0, due - time.perf_counter()))
                proc.stdin.write(piece)
                proc.stdin.flush()
                left, pos = left - len(piece), (pos + len(piece)) % len(pool)
                if realtime:
                    written.append((total - left // 4, time.perf_counter()))
            state["end_rss"] = _rss_kib(proc.pid)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        state["done_writing"] = True

    def sample() -> None:
        while proc.poll() is None:
            kib = _rss_kib(proc.pid)
            if kib is not None:
                state["rss"].append((state["lines"], kib, time.perf_counter()))
            time.sleep(0.25)

    start = time.perf_counter()
    threads = [threading.Thread(target=write, daemon=True), threading.Thread(target=sample, daemon=True)]
    for th in threads:
        th.start()
    stamps, first_rss, last, latency, k, cost = [], None, None, [], 0, []
    for now, line in _lines(proc.stdout.fileno()):
        stamps.append(now)
        cost.append(json.loads(line)["ms"])
        if realtime:  # from the write that delivered the hop's last sample to the line
            end = round(json.loads(line)["time"] * SR)
            while k < len(written) and written[k][0] < end:
                k += 1
            if k < len(written):
                latency.append((now - written[k][1]) * 1000)
        state["lines"] += 1
        if first_rss is None:
            first_rss = _rss_kib(proc.pid)
        last = line
    err = proc.stderr.read().decode(errors="replace")
    rc = proc.wait()
    wall = time.perf_counter() - start
    for th in threads:
        th.join(timeout=5)
    if rc != 0:
        raise SystemExit(f"{name}: sedkit stream exited {rc}: {err.strip()[-500:]}")
    hops = len(stamps)
    gaps = np.array(latency[warmup:] if realtime else cost[warmup:])
    steady = (
        np.diff(np.array(stamps[warmup:])) * 1000
    )  # wall time between lines (bursty under CPU contention)
    # while it streams: from the first to the last line (not the start-up, nor the interpreter's exit)
    running = [(n, k) for n, k, t in state["rss"] if stamps and stamps[0] <= t <= stamps[-1]]
    rss = [k for _, k in running]
    at10 = next((k for n, k in running if n >= hops // 10), rss[0] if rss else 0)
    return {
        "model": name,
        "hops": hops,
        "audio_min": total / SR / 60,
        "wall_s": wall,
        "last_time": json.loads(last)["time"] if last else None,
        "hop_ms_median": float(np.median(gaps)) if gaps.size else float("nan"),
        "hop_ms_p99": float(np.percentile(gaps, 99)) if gaps.size else float("nan"),
        "hop_ms_max": float(gaps.max()) if gaps.size else float("nan"),
        "wall_ms_mean": float(steady.mean()) if steady.size else float("nan"),
        "rss_start_mib": (first_rss or 0) / 1024,
        "rss_end_mib": (state["end_rss"] or (rss[-1] if rss else 0)) / 1024,
        "rss_max_mib": max(rss, default=0) / 1024,
        "rss_growth_mib": ((rss[-1] if rss else 0) - at10) / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="minutes of audio per model (default 60)")
    ap.add_argument("--hop", type=float, default=0.5)
    ap.add_argument("--chunk", type=float, default=0.1, help="seconds of audio per write to stdin")
    ap.add_argument("--models", default="tcn_small,cnn_tiny", help="comma-separated registry names")
    ap.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="hops left out of the latency statistics (default: those until a full clip has "
        "arrived, plus 2: every earlier window has a new length)",
    )
    ap.add_argument(
        "--threads",
        type=lambda v: [int(t) for t in v.split(",")],
        default=[1, 0],
        help="--threads of sedkit stream, comma-separated runs (0: torch's default); default 1,0",
    )
    ap.add_argument(
        "--realtime",
        action="store_true",
        help="write the audio at real-time pace (as a microphone would) and report the latency from "
        "the write that completes a hop to its JSON line; takes --minutes of wall time",
    )
    args = ap.parse_args()

    import torch

    from sed.checkpoint import save_model
    from sed.models import create_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = create_model(name, num_classes=50).eval()
            ckpt = save_model(Path(tmp) / f"{name}.pt", model)
            kind = "causal" if hasattr(model, "stream_step") else "window"
            print(
                f"{name} ({kind}, clip {model.clip_samples / SR:.2f} s): {args.minutes:g} min of audio, "
                f"threads {args.threads} ...",
                file=sys.stderr,
                flush=True,
            )
            warmup = (
                args.warmup if args.warmup is not None else math.ceil(model.clip_samples / SR / args.hop) + 2
            )
            for threads in args.threads:
                row = run_one(name, ckpt, args.minutes, args.hop, args.chunk, warmup, args.realtime, threads)
                rows.append({**row, "kind": kind, "threads": threads or torch.get_num_threads()})
    what = "latency after the hop's last sample" if args.realtime else 'computed per hop (the lines\' "ms")'
    print(
        f"\nsedkit stream, {args.minutes:g} min of 16 kHz float32 on stdin"
        f"{' at real-time pace' if args.realtime else ''}; hop_ms = {what}; hop {args.hop} s, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    cols = [
        "model",
        "kind",
        "threads",
        "hops",
        "wall_s",
        "wall_ms_mean",
        "hop_ms_median",
        "hop_ms_p99",
        "hop_ms_max",
        "rss_start_mib",
        "rss_end_mib",
        "rss_max_mib",
        "rss_growth_mib",
    ]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    for r in rows if not args.realtime else []:
        rtf = args.hop * 1000 / r["hop_ms_median"] if r["hop_ms_median"] else float("inf")
        print(f"{r['model']} ({r['threads']} threads): {rtf:.0f}x faster than real time per hop (median)")


if __name__ == "__main__":
    main()
