"""The HTTP service (``sedkit serve``): LitServe with dynamic batching over :mod:`sed.inference`, and the
static web page under ``static/`` (plain HTML/JS/CSS, no build step, nothing fetched from a CDN).
Calls inference only (DESIGN.md: cli -> serve -> inference)."""
