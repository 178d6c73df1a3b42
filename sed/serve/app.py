"""``sedkit serve``: the HTTP service of a checkpoint, built on LitServe (dynamic batching, worker processes).

:func:`build_server` makes the :class:`litserve.LitServer` of :class:`~sed.serve.api.SedAPI` and puts the
contract's routes on its FastAPI app (docs/serving.md): LitServe's own ``/``, ``/health``, ``/info`` and
``/predict`` routes are replaced by ours, which answer JSON (``{"error": one line}`` for every refusal), read
an upload in any of the three input forms within the size limit before anything is queued, and check the
API key. ``/predict`` hands the checked upload to LitServe's request handler, so LitServe's queue, batching
and workers do the rest. ``/stream`` (:mod:`sed.serve.stream`) and ``/stats`` run in the HTTP process.
:func:`serve` runs it until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request  # at module level: FastAPI resolves the routes' annotations here

from sed.errors import SedError, UsageError, one_line
from sed.serve.requests import ServeError, check_key, read_upload

__all__ = ["LOOPBACK", "STATIC", "Stats", "build_server", "describe", "serve"]

#: the web page's folder: the only files a request can read
STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = ("127.0.0.1", "localhost")
_HOSTS = {"localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1", "0.0.0.0": "0.0.0.0", "::": "::"}
_OPEN = ("/", "/health")  # with /static/*: no key needed
_OPEN_BATCHES = 4096  # batches /stats remembers while their answers come


class Stats:
    """How the requests were batched, from the ``[worker, batch, size]`` tag of each answer."""

    def __init__(self):
        self.requests, self.batches, self.sizes = 0, 0, Counter()
        self._open: dict[tuple, int] = {}  # batches some of whose answers are still to come
        self._lock = threading.Lock()

    def record(self, tag) -> None:
        worker, number, size = tag
        with self._lock:
            self.requests += 1
            key = (worker, number)
            left = self._open.pop(key, None)
            if left is None:
                self.batches += 1
                self.sizes[int(size)] += 1
                left = int(size)
            if left > 1:
                self._open[key] = left - 1
                if len(self._open) > _OPEN_BATCHES:  # answers a gone client never took: forget the oldest
                    self._open.pop(next(iter(self._open)))

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            sizes = {str(k): v for k, v in sorted(self.sizes.items())}
            return {"requests": self.requests, "batches": self.batches, "batch_sizes": sizes}


def describe(clf) -> dict[str, Any]:
    """The checkpoint's description as ``/info`` gives it (no server paths)."""
    members = getattr(clf, "members", None)
    meta = dict(getattr(clf, "meta", None) or (members[0].meta if members else {}))
    sr = int(clf.sample_rate)
    clip = meta.get("clip_samples")
    out = {
        "model_name": meta.get("model_name"),
        "labels": list(clf.labels),
        "num_classes": len(clf.labels),
        "sample_rate": sr,
        "clip_seconds": clip / sr if clip else None,
        "multi_label": bool(clf.multi_label),
        "channels": meta.get("channels", "mono"),
    }
    if meta.get("frame_hop"):
        out["frame_hop"] = meta["frame_hop"]
    if members:
        out["ensemble"] = clf.method
        out["members"] = [m.meta.get("model_name") for m in members]
    return out


def _routes(server, api, clf, options: dict[str, Any], stats: Stats) -> None:
    """Replace LitServe's routes by the contract's (module docstring) on ``server.app``."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from litserve.server import RegularRequestHandler
    from litserve.utils import WorkerSetupStatus
    from starlette.exceptions import HTTPException

    app, key = server.app, options.get("api_key")
    ours = {"/", "/health", "/info", api.api_path}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in ours]
    handler = RegularRequestHandler(api, server)
    served = {k: v for k, v in options.items() if k not in ("api_key", "cors_origin")}
    info = {**describe(clf), "serve": {**served, "api_key": bool(key)}}
    limit = int(options["max_upload_mb"] * 2**20)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    app.add_exception_handler(ServeError, lambda request, e: error(e.status, e.message))
    app.add_exception_handler(
        HTTPException, lambda request, e: error(e.status_code, one_line(Exception(e.detail)))
    )
    app.add_exception_handler(
        RequestValidationError, lambda request, e: error(400, "bad request (see docs/serving.md)")
    )
    app.add_exception_handler(Exception, lambda request, e: error(500, "internal server error"))

    @app.middleware("http")
    async def api_key(request: Request, call_next):
        path = request.url.path
        if path not in _OPEN and not path.startswith("/static/"):
            try:
                check_key(key, request.headers, {})  # ?api_key=: the WebSocket's only
            except ServeError as e:
                return error(e.status, e.message)
        return await call_next(request)

    @app.get("/")
    async def index():
        page = STATIC / "index.html"
        if not page.is_file():
            raise ServeError(404, "the web page is not installed (sed/serve/static/index.html)")
        return FileResponse(page)

    @app.get("/health")
    async def health():
        status = server.workers_setup_status
        ready = bool(status) and all(v == WorkerSetupStatus.READY for v in status.values())
        return JSONResponse({"status": "ok"} if ready else {"status": "starting"}, 200 if ready else 503)

    @app.get("/info")
    async def get_info():
        return info

    @app.get("/stats")
    async def get_stats():
        return stats.as_dict()

    @app.post(api.api_path)
    async def predict(request: Request):
        upload = await read_upload(request, limit)
        out = await handler.handle_request(
            {"name": upload.name, "data": upload.data, "params": upload.params}, dict
        )
        stats.record(out.pop("_batch"))
        if "error" in out:
            raise ServeError(out.get("status", 400), out["error"])
        return JSONResponse(out["body"])

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    from sed.serve.stream import add_stream_route

    add_stream_route(app, clf, key)
    if options.get("cors_origin"):
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=[options["cors_origin"]],
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )


def check_host(host: str, api_key: str | None) -> tuple[str, str | None]:
    """(the address LitServe binds, a warning line or None); a host LitServe cannot bind, or one beyond
    this machine without a key, is a UsageError."""
    if host not in _HOSTS:
        raise UsageError(
            f"--host {host}: LitServe binds 127.0.0.1 (this machine), 0.0.0.0 or :: (all interfaces)"
        )
    if host in LOOPBACK:
        return _HOSTS[host], None
    if not api_key:
        raise UsageError(
            f"--host {host} serves other machines: give --api-key KEY (or set SED_API_KEY), or keep 127.0.0.1"
        )
    return _HOSTS[host], f"serving on {host}: reachable from other machines; requests need the API key"


def build_server(
    checkpoint: str | list[str],
    ensemble: str | None = None,
    weights: str | None = None,
    host: str = "127.0.0.1",
    max_batch_size: int = 16,
    batch_timeout: float = 0.01,
    workers: int = 1,
    api_key: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    max_upload_mb: float = 50,
    max_seconds: float = 600,
    cors_origin: str | None = None,
    labels: list[str] | None = None,
    template: str | None = None,
):
    """The LitServer of a checkpoint (or an ensemble of several, as ``sedkit classify``; ``labels``: the
    zero-shot classes of CLAP checkpoints, prompted with ``template``); run it with :func:`serve`. A
    checkpoint that cannot be loaded is a UsageError (before any worker starts)."""
    import litserve as ls

    from sed.serve.api import SedAPI, load_scorer

    checkpoints = [checkpoint] if isinstance(checkpoint, str | os.PathLike) else list(checkpoint)
    api_key = api_key or os.environ.get("SED_API_KEY") or None
    check_host(host, api_key)
    model = {"checkpoints": [str(c) for c in checkpoints], "ensemble": ensemble, "weights": weights}
    if labels is not None:  # each worker builds the zero-shot classifier again from the CLAP source
        model.update(labels=list(labels), template=template)
    try:  # the workers' device and precision, before any starts (torch.cuda.is_available creates no context)
        from sed.inference.device import check_precision

        check_precision(device, precision)
    except (ValueError, RuntimeError) as e:
        raise UsageError(e) from None
    try:  # here once on the CPU: to refuse a bad checkpoint now, describe it, and run /stream
        clf = load_scorer(**model, device="cpu", precision=precision if precision == "int8" else "fp32")
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    options = {
        "max_upload_mb": max_upload_mb,
        "max_seconds": max_seconds,
        "max_batch_size": max_batch_size,
        "batch_timeout": batch_timeout,
        "workers": workers,
        "detect": bool(describe(clf).get("frame_hop")) and not getattr(clf, "members", None),
        "api_key": api_key,
        "cors_origin": cors_origin,
    }
    api = SedAPI(
        {**model, "device": device, "precision": precision},
        max_seconds,
        max_batch_size=max_batch_size,
        batch_timeout=batch_timeout,
    )
    accelerator = "auto" if device in ("auto", "cuda") and precision != "int8" else "cpu"
    server = ls.LitServer(
        api, accelerator=accelerator, workers_per_device=workers, timeout=False, disable_openapi_url=True
    )
    _routes(server, api, clf, options, Stats())
    return server


class _QuietShutdown(logging.Filter):
    """Drops LitServe's traceback of its worker monitor losing the process manager that its own shutdown has
    just stopped (a race of its thread, not an error of the service)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            record.getMessage() == "Monitoring worker crashed" and isinstance(exc, OSError | EOFError)
        )


def _check_port(host: str, port: int) -> None:
    """A UsageError when ``host:port`` cannot be bound now (uvicorn would log it and exit 3 later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError as e:
            raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e})") from None


def _when_ready(url: str, ready: Callable[[str], None], stop: threading.Event) -> None:
    while not stop.wait(0.1):
        try:
            with urllib.request.urlopen(url + "health", timeout=2) as r:
                if json.loads(r.read()).get("status") == "ok":
                    ready(url)
                    return
        except (OSError, ValueError):
            continue


def serve(
    checkpoint: str | list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    ready: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    **options,
) -> None:
    """Build the server (:func:`build_server`'s ``options``) and run it on ``host:port`` until Ctrl-C or
    SIGTERM; ``ready(url)`` is called once it answers, ``warn(line)`` for a host beyond this machine."""
    key = options.get("api_key") or os.environ.get("SED_API_KEY") or None
    bind, warning = check_host(host, key)
    if warning and warn:
        warn(warning)
    _check_port(bind, port)
    server = build_server(checkpoint, host=host, **options)
    shown = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    stop = threading.Event()
    if ready is not None:
        url = f"http://{shown}:{port}/"
        threading.Thread(target=_when_ready, args=(url, ready, stop), daemon=True).start()

    owner = os.getpid()

    def interrupt(signum, frame):
        if os.getpid() == owner:  # LitServe's graceful shutdown of its processes
            raise KeyboardInterrupt
        # a forked HTTP process, whose uvicorn has stopped and passes the signal on: end without a traceback
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    logging.getLogger("litserve.server").addFilter(_QuietShutdown())
    try:
        server.run(host=bind, port=port, num_api_servers=1, log_level="warning", generate_client_file=False)
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:  # "One or more workers failed to start" (each worker logged why)
        raise SedError(None, f"the service stopped: {one_line(e)}") from None
    finally:
        stop.set()
        for s, handler in previous.items():
            signal.signal(s, handler)
