"""Property-based fuzz tests of output paths: :func:`sed.fileio.check_output` with the atomic writers,
and ``sedkit classify --output`` / ``sedkit embed --out`` end to end.

A destination is drawn from fresh, nested, existing, a directory, under a file, a FIFO, an input
itself (by its name, a symbolic link or a hard link), a name past 255 bytes, and for ``embed`` its
``.files.txt`` taken by a directory; its name from hostile stems (newline, escape sequence, tab); a
fault from :data:`~tests.fuzz.strategies.OUTPUT_FAULTS` (read-only folder, temporary refused, full
disk at ``write`` or at ``fsync``, failed rename).

The invariant: a destination that can be written and no fault give a complete output; otherwise the
job stops with exit 2 (the helper: an :class:`~sed.errors.OutputError`) and one printable ``error:``
line naming the output, never a traceback. Either way the inputs are untouched and nothing partial
is left: the folder holds what it held plus, on success, the output(s) only.
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.cli.report import embedding_names
from sed.errors import OutputError, printable
from sed.fileio import atomic_open, check_output
from sed.models import create_model
from tests.fuzz.strategies import OUTPUT_FAULTS, STEMS, outcome, output_fault, scaled

#: destinations that can be written (as a file; ``directory`` too as a folder)
WRITABLE = {"fresh", "nested", "existing"}
DESTINATIONS = (
    "fresh",
    "nested",
    "existing",
    "directory",
    "parent_is_file",
    "fifo",
    "input",
    "symlink",
    "hardlink",
    "long",
)
NAMES = st.tuples(STEMS, st.sampled_from([".csv", ".npy", ".json", ""])).map("".join)


def destination(root: Path, kind: str, name: str, the_input: Path) -> Path:
    """Make ``root`` hold a destination of ``kind`` and return its path."""
    out = root / name
    if kind == "nested":
        return root / "new" / "deeper" / name
    if kind == "existing":
        out.write_bytes(b"old output")
    elif kind == "directory":
        out.mkdir()
        (out / "kept.txt").write_text("kept")
    elif kind == "parent_is_file":
        (root / "plain").write_text("kept")
        return root / "plain" / name
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "input":
        return the_input
    elif kind == "symlink":
        out.symlink_to(the_input)
    elif kind == "hardlink":
        os.link(the_input, out)
    elif kind == "long":
        return root / ("x" * 300 + name)
    return out


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` but folders (links not followed) with the bytes of each regular file;
    a folder made on the way to an output that then failed may stay, empty, as ``mkdir -p`` leaves it."""
    return {
        os.fspath(p.relative_to(root)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or not p.is_dir()
    }


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------------- the helper and the atomic writers


@given(
    kind=st.sampled_from(DESTINATIONS),
    name=NAMES,
    fault=st.sampled_from(OUTPUT_FAULTS),
    folder=st.booleans(),
    payload=st.binary(max_size=64),
)
@example(kind="input", name="f", fault="none", folder=False, payload=b"")
@example(kind="existing", name="a\nb.csv", fault="fsync", folder=False, payload=b"new")
def test_fuzz_check_output_then_atomic_write(scratch, kind, name, fault, folder, payload):
    root = scratch()
    the_input = root / "in.wav"
    the_input.write_bytes(b"the input")
    out = destination(root, kind, name, the_input)
    target = out / "index.json" if folder else out  # a folder output: one file written into it
    before = snapshot(root)

    def write():
        check_output(out, [the_input], kind="folder" if folder else "file")
        with atomic_open(target, "wb") as f:
            f.write(payload)

    with output_fault(fault, root):
        result = outcome(write, out, target)
    writable = kind in WRITABLE | ({"directory"} if folder else set()) and not (folder and kind == "existing")
    if writable and fault == "none":
        assert result is None and target.read_bytes() == payload
        after = snapshot(root)
        assert {k: v for k, v in after.items() if root / k not in (target, *target.parents)} == {
            k: v for k, v in before.items() if root / k not in (target, *target.parents)
        }
    else:
        assert isinstance(result, OutputError), (kind, fault, result)
        assert snapshot(root) == before  # the old output kept, nothing partial, the input untouched
    assert the_input.read_bytes() == b"the input"


# ---------------------------------------------------------------------- classify and embed end to end


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> bytes:
    torch.manual_seed(3)
    model = create_model("ast_micro", num_classes=3, input_tdim=100, labels=["bird", "car", "rain"])
    path = save_model(tmp_path_factory.mktemp("model") / "model.pt", model)
    return path.read_bytes()


@scaled(0.3)
@given(
    verb=st.sampled_from(["classify", "embed"]),
    kind=st.sampled_from((*DESTINATIONS, "sidecar_dir", "checkpoint")),
    name=NAMES,
    fault=st.sampled_from(OUTPUT_FAULTS),
)
@example(verb="classify", kind="input", name="f", fault="none")
@example(verb="embed", kind="symlink", name="a\nb.npy", fault="none")
@example(verb="embed", kind="fresh", name="\x1b[31m.npy", fault="full_disk")
def test_fuzz_classify_and_embed_outputs(scratch, model_file, verb, kind, name, fault):
    root = scratch()
    (root / "model.pt").write_bytes(model_file)
    wav = root / "x.wav"
    sf.write(wav, np.random.default_rng(0).uniform(-0.3, 0.3, 4000), 16000)
    inputs = {wav: wav.read_bytes(), root / "model.pt": model_file}
    if kind == "sidecar_dir":  # embed's OUT.files.txt is a directory
        out = root / name
        embedding_names(out).mkdir(exist_ok=True)
    elif kind == "checkpoint":
        out = root / "model.pt"
    else:
        out = destination(root, kind, name, wav)
    before = snapshot(root)
    argv = (
        [
            "classify",
            str(wav),
            "--checkpoint",
            str(root / "model.pt"),
            "--top-k",
            "1",
            "--format",
            "csv",
            "--output",
            str(out),
        ]
        if verb == "classify"
        else ["embed", str(wav), "--checkpoint", str(root / "model.pt"), "--out", str(out)]
    )
    stderr = io.StringIO()
    with output_fault(fault, root), redirect_stderr(stderr), redirect_stdout(io.StringIO()) as stdout:
        code = main(argv)
    errors = error_lines(stderr.getvalue())
    sidecar_taken = kind == "sidecar_dir" and (verb == "embed" or name.endswith(".files.txt"))
    if kind in WRITABLE | {"sidecar_dir"} and not sidecar_taken and fault == "none":
        assert code == 0 and errors == [] and stdout.getvalue() == ""
        if verb == "classify":
            assert out.read_text().startswith("file,") and printable(str(wav)) in out.read_text()
        else:
            assert (
                np.load(out).shape[0] == 1 and embedding_names(out).read_text() == f"{printable(str(wav))}\n"
            )
    else:
        assert code == 2, (kind, fault, stderr.getvalue())
        assert len(errors) == 1, errors
        named = [printable(os.fspath(p)) for p in (out, embedding_names(out) if verb == "embed" else out)]
        assert any(n in errors[0] for n in named), errors[0]
        assert errors[0].isprintable()
        assert snapshot(root) == before
    assert all(p.read_bytes() == data for p, data in inputs.items())
