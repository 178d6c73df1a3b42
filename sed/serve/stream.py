"""``WS /stream``: ``sedkit stream`` over a WebSocket. Binary messages carry raw mono PCM at the model's
sample rate (``format=f32le``, the default, or ``s16le``); the server answers one text message per hop,
exactly the line ``sedkit stream`` prints for that hop (``{"time", "top_k"}``, by
:class:`sed.inference.stream.Streamer`); the text message ``end`` flushes the last partial hop and the
server closes (1000). Bad parameters or bad samples: one ``{"error"}`` message, then close 1008. Runs in
the HTTP process on the CPU, each hop in a thread, with the copy of the model
:func:`sed.serve.app.build_server` loaded there.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect  # module level: FastAPI resolves annotations

from sed.errors import SedError, one_line, printable
from sed.serve.requests import PARAMETERS, ServeError, check_key

__all__ = ["FORMATS", "add_stream_route", "stream_params"]

#: ``format`` -> :data:`sed.audio.pcm.PCM_FORMATS` key
FORMATS = {"f32le": "f32", "s16le": "s16"}
_TAKES = ("hop", "window", "top_k", "format", "api_key")


def stream_params(query) -> dict[str, Any]:
    """``hop`` (s, default 0.5), ``window`` (s or None: the model's clip), ``top_k`` (5), ``format``."""
    out: dict[str, Any] = {"hop": 0.5, "window": None, "top_k": 5, "format": "f32le"}
    for key, value in query.items():
        if key not in _TAKES:
            raise ServeError(
                400, f"unknown parameter '{printable(key)[:40]}' (takes: {', '.join(_TAKES[:-1])})"
            )
        if key == "format":
            if value not in FORMATS:
                raise ServeError(400, f"format must be {' or '.join(FORMATS)}")
            out[key] = value
        elif key != "api_key" and value != "":
            try:
                out[key] = PARAMETERS[key](key, value)
            except (ValueError, TypeError, OverflowError):
                raise ServeError(400, f"parameter {key} is not a number") from None
    return out


def add_stream_route(app, clf, key: str | None) -> None:
    """``/stream`` on ``app``, streaming through ``clf`` (a Classifier)."""
    from starlette.concurrency import run_in_threadpool

    from sed.audio.pcm import PCM_FORMATS, decode_pcm
    from sed.inference.stream import Streamer

    @app.websocket("/stream")
    async def stream(ws: WebSocket):
        await ws.accept()

        async def refuse(message: str) -> None:
            await ws.send_text(json.dumps({"error": message}))
            await ws.close(1008)

        try:
            check_key(key, ws.headers, ws.query_params)
            opts = stream_params(ws.query_params)
            if not hasattr(clf, "model"):
                raise ServeError(400, "/stream runs one checkpoint, not an ensemble")
            streamer = Streamer(clf, opts["hop"], window=opts["window"])
        except ServeError as e:
            return await refuse(e.message)
        except ValueError as e:
            return await refuse(f"hop/window: {one_line(e)}")
        fmt = FORMATS[opts["format"]]
        width, pending, frames = PCM_FORMATS[fmt][1], b"", 0

        async def send(hops) -> None:
            for h in hops:
                line = {"time": round(h.time, 6), "top_k": clf.top_k(h.scores, opts["top_k"])}
                await ws.send_text(json.dumps(line))

        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("bytes") is not None:
                    data = pending + msg["bytes"]
                    whole = len(data) - len(data) % width
                    x = decode_pcm(data[:whole], 1, fmt, "stream", offset=frames, rate=clf.sample_rate)
                    pending, frames = data[whole:], frames + x.shape[0]
                    await send(await run_in_threadpool(streamer.feed, x))
                elif (msg.get("text") or "").strip() == "end":
                    if pending:
                        return await refuse(f"stream: ends inside a sample ({len(pending)} bytes left over)")
                    await send(await run_in_threadpool(streamer.finish))
                    return await ws.close(1000)
                else:
                    return await refuse("send binary PCM messages, then the text message 'end'")
        except SedError as e:
            return await refuse(str(e))
        except WebSocketDisconnect:
            return
