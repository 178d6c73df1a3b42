"""What a ``POST /predict`` carries, read in the HTTP process before any work: the upload's bytes (bounded)
and its parameters (checked), from any of the three input forms.

1. ``multipart/form-data``: the audio file in the field ``file``, parameters as other form fields;
2. a raw body (``audio/*`` or ``application/octet-stream``): the audio file's bytes, parameters in the query;
3. ``application/json`` in the Hugging Face inference format: ``{"inputs": "<base64 audio>", "parameters":
   {...}}`` (a ``data:...;base64,`` prefix is accepted, as a browser's FileReader writes it).

Query parameters apply to every form (a body's own parameters win). Every problem is a :class:`ServeError`:
an HTTP status and one line (400 bad parameter or body, 413 too large, 415 an unsupported type).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sed.errors import printable

__all__ = ["FUNCTIONS", "PARAMETERS", "ServeError", "Upload", "check_key", "parse_params", "read_upload"]

#: ``function_to_apply`` values: what turns the model's logits into scores
FUNCTIONS = ("softmax", "sigmoid", "none")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_CHUNK = 1 << 16


class ServeError(Exception):
    """A request the service refuses: ``status`` and a one-line ``message`` (the JSON ``error``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, printable(str(message))


def _number(kind: type, low: float, high: float, low_open: bool = False):
    def parse(name: str, value: Any):
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError
        x = kind(value)
        if not math.isfinite(x) or x < low or (low_open and x == low) or x > high:
            bound = f"{low:g} {'<' if low_open else '<='} {name} <= {high:g}"
            raise ServeError(400, f"parameter {name}={printable(str(value))[:24]} is out of range ({bound})")
        return x

    parse.what = "an integer" if kind is int else "a number"
    return parse


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text == "":
        return True
    if text in _FALSE:
        return False
    raise ValueError


_flag.what = "true or false"


def _function(name: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in FUNCTIONS:
        raise ValueError
    return text


_function.what = " | ".join(FUNCTIONS)

#: parameter -> parser (each raises ValueError for a value of the wrong kind, ServeError when out of range)
PARAMETERS = {
    "top_k": _number(int, 1, 10_000),
    "function_to_apply": _function,
    "window": _number(float, 0, 600, low_open=True),
    "hop": _number(float, 0, 3600, low_open=True),
    "detect": _flag,
    "threshold": _number(float, 0, 1),
    "median": _number(float, 0, 60),
    "spectrogram": _flag,
}
#: query keys that are not parameters
_IGNORED = ("api_key",)


def parse_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Checked parameters of ``raw`` (strings of a query or form, or JSON values); only those given."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _IGNORED:
            continue
        parse = PARAMETERS.get(key)
        if parse is None:
            raise ServeError(
                400, f"unknown parameter '{printable(str(key))[:40]}' (takes: {', '.join(PARAMETERS)})"
            )
        try:
            out[key] = parse(key, value)
        except (ValueError, TypeError, OverflowError):
            shown = printable(str(value))
            shown = shown if len(shown) <= 24 else shown[:21] + "..."
            raise ServeError(400, f"parameter {key}={shown} is not {parse.what}") from None
    if "hop" in out and "window" not in out:
        raise ServeError(400, "parameter hop needs window")
    if ("threshold" in out or "median" in out) and not out.get("detect"):
        raise ServeError(400, "parameters threshold and median need detect=true")
    return out


@dataclass
class Upload:
    """One request's audio file (``name``: its filename or "upload") and checked parameters."""

    name: str
    data: bytes
    params: dict[str, Any] = field(default_factory=dict)


def _too_large(limit: int) -> ServeError:
    return ServeError(413, f"upload larger than the service takes (max {limit / 2**20:g} MB)")


async def _bounded(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        yield chunk


async def _body(stream: AsyncIterator[bytes], limit: int) -> bytes:
    parts = [chunk async for chunk in _bounded(stream, limit)]
    return b"".join(parts)


async def read_upload(request, limit: int) -> Upload:
    """The :class:`Upload` of a Starlette ``request``; at most ``limit`` bytes of body are read."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    query = parse_params(request.query_params)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        parser = MultiPartParser(
            request.headers, _bounded(request.stream(), limit), max_files=1, max_fields=len(PARAMETERS)
        )
        try:
            form = await parser.parse()
        except MultiPartException as e:
            raise ServeError(400, f"bad multipart body ({e.message})") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ServeError(400, "multipart body without a file field named 'file'")
        fields = {k: v for k, v in form.multi_items() if k != "file"}
        data = await upload.read()
        await form.close()
        return Upload(upload.filename or "upload", data, {**query, **parse_params(fields)})
    if kind.startswith("audio/") or kind == "application/octet-stream":
        return Upload("upload", await _body(request.stream(), limit), query)
    if kind == "application/json":
        # base64 is 4/3 of the audio, and a JSON envelope around it
        text = await _body(request.stream(), limit * 4 // 3 + _CHUNK)
        return Upload("upload", *_hf_json(text, query, limit))
    raise ServeError(
        415,
        f"unsupported Content-Type {printable(kind)[:60] or '(none)'!r}: send multipart/form-data, audio/* "
        "or application/octet-stream, or application/json",
    )


def _hf_json(text: bytes, query: dict[str, Any], limit: int) -> tuple[bytes, dict[str, Any]]:
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ServeError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
        raise ServeError(400, 'JSON body needs "inputs": the audio file as a base64 string')
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise ServeError(400, '"parameters" must be a JSON object')
    inputs = body["inputs"]
    if inputs.startswith("data:") and "," in inputs[:200]:
        inputs = inputs.split(",", 1)[1]
    try:
        data = base64.b64decode(inputs, validate=True)
    except (binascii.Error, ValueError):
        raise ServeError(400, '"inputs" is not valid base64') from None
    if len(data) > limit:
        raise _too_large(limit)
    return data, {**query, **parse_params(params)}


def check_key(key: str | None, headers, query) -> None:
    """401 unless the request carries ``key``: header ``X-API-Key`` or ``Authorization: Bearer``, else
    ``query["api_key"]``."""
    if not key:
        return
    given = headers.get("x-api-key")
    bearer = headers.get("authorization", "")
    if given is None and bearer.lower().startswith("bearer "):
        given = bearer[7:].strip()
    if given is None:
        given = query.get("api_key")
    if given is None:
        raise ServeError(401, "this service needs an API key (header X-API-Key: KEY)")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8")):
        raise ServeError(401, "wrong API key")
