"""``sedkit serve``: the HTTP service of a checkpoint (a thin layer over :func:`sed.serve.app.serve`)."""

from __future__ import annotations

import argparse

from sed.cli.options import add_checkpoint, add_device, add_labels, add_precision, bounded, count, zero_shot
from sed.errors import UsageError


def cmd_serve(args: argparse.Namespace, con) -> int:
    from sed.serve.app import serve

    if args.ensemble is None and (len(args.checkpoint) > 1 or args.weights is not None):
        raise UsageError("several --checkpoint (or --weights) need --ensemble vote|average|weighted|rank")
    if args.ensemble is not None and len(args.checkpoint) < 2:
        raise UsageError("an ensemble needs at least two checkpoints")
    text = zero_shot(args)  # --labels: the zero-shot classes of the CLAP checkpoint(s)
    serve(
        args.checkpoint,
        host=args.host,
        port=args.port,
        ready=lambda url: con.status(f"serving {url} (Ctrl-C stops)"),
        warn=lambda line: con.note(line),
        ensemble=args.ensemble,
        weights=args.weights,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        workers=args.workers,
        api_key=args.api_key,
        device=args.device,
        precision=args.precision,
        max_upload_mb=args.max_upload_mb,
        max_seconds=args.max_seconds,
        cors_origin=args.cors_origin,
        **text,
    )
    return 0


def add_verbs(sub) -> None:
    p = sub.add_parser(
        "serve", help="an HTTP service of a checkpoint: /predict with dynamic batching, /stream, a web page"
    )
    add_checkpoint(p, "any checkpoint sedkit classify takes; repeat it with --ensemble", several=True)
    p.add_argument(
        "--ensemble",
        choices=["vote", "average", "weighted", "rank"],
        default=None,
        help="combine the scores of several --checkpoint, as sedkit classify",
    )
    p.add_argument("--weights", default=None, help="the ensemble's weights or metrics, as sedkit classify")
    add_labels(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="127.0.0.1 (this machine only), or 0.0.0.0 / :: (every interface: needs --api-key)",
    )
    p.add_argument("--port", type=count(65535, low=1024, metavar="PORT"), default=8000, help="TCP port")
    p.add_argument(
        "--max-batch-size", type=count(1024), default=16, help="requests scored together (dynamic batching)"
    )
    p.add_argument(
        "--batch-timeout",
        type=bounded(float, 0, 60, "SECONDS"),
        default=0.01,
        help="how long a batch waits for more requests",
    )
    p.add_argument("--workers", type=count(64), default=1, help="inference worker processes (per device)")
    p.add_argument(
        "--api-key",
        default=None,
        help="requests need header X-API-Key: KEY (or Authorization: Bearer KEY); default: $SED_API_KEY",
    )
    add_device(p)
    add_precision(p)
    p.add_argument(
        "--max-upload-mb",
        type=bounded(float, 0, 4096, "MB", open_low=True),
        default=50,
        help="largest upload",
    )
    p.add_argument(
        "--max-seconds",
        type=bounded(float, 0, 86400, "SECONDS", open_low=True),
        default=600,
        help="longest audio an upload may hold",
    )
    p.add_argument(
        "--cors-origin", default=None, help="a web origin allowed to call the service from a browser (CORS)"
    )
    p.set_defaults(run=cmd_serve)
