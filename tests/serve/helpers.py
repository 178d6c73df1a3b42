"""A ``sedkit serve`` subprocess on a free loopback port, and small HTTP helpers (stdlib only).

:func:`running_server` starts ``python -m sed serve ...`` in its own process group, waits for ``/health``
in a bounded loop (no timing races: it waits for the server to say it is ready) and always kills the
group when the block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

STARTUP_S = 180  # bound of the wait for /health (the suite runs on a few shared cores)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = url, proc, log

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, parsed JSON or raw bytes, response headers)."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, data, hdrs = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, data, hdrs = e.code, e.read(), e.headers
        try:
            return status, json.loads(data), hdrs
        except ValueError:
            return status, data, hdrs


def raw_exchange(server: Server, head: str, body: bytes = b"") -> tuple[int, dict]:
    """(status, JSON) of a hand-made HTTP/1.1 request: ``head`` (request line and headers, without the blank
    line), then ``body``; only what the server reads is sent, so it answers without a reset."""
    host, port = server.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=120) as s:
        s.sendall(head.encode() + b"\r\nConnection: close\r\n\r\n" + body)  # close: no keep-alive wait
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def multipart(data: bytes, filename: str, fields: dict | None = None) -> tuple[bytes, dict]:
    """(body, headers) of a multipart/form-data upload of ``data`` in the field ``file``."""
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@contextlib.contextmanager
def running_server(args: list[str], log: Path, env: dict | None = None):
    """A :class:`Server` of ``sedkit serve ARGS --port FREE`` (on 127.0.0.1), stopped on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "sed", "serve", *args, "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sedkit serve exited ({proc.returncode}): {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if server.request("GET", "/health")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"sedkit serve not ready in {STARTUP_S} s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, then SIGKILL if it has not ended within 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
