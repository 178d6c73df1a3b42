"""Every output path of the verbs that write: one ``error: PATH: reason`` line (exit 2) for an output that
cannot be written, checked before the work where it can be; nothing partial left; an output that is one
of the inputs refused before any work, the input untouched.

Root ignores permission bits and a real full disk is out of reach, so a read-only folder is an
``os.access`` that says no, and a full disk is a writer whose ``write`` and ``fsync`` fail with ``ENOSPC``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.checkpoint import save_model
from sed.errors import OutputError, printable
from sed.fileio import atomic_open, atomic_save, check_output
from sed.models import create_model
from tests.fuzz.strategies import output_fault
from tests.sedkit_run import run

SR = 16000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    torch.manual_seed(3)
    model = create_model("ast_micro", num_classes=3, input_tdim=100, labels=["bird", "car", "rain"])
    ckpt = save_model(root / "model.pt", model)
    rng = np.random.default_rng(0)
    wav = root / "x.wav"
    sf.write(wav, rng.uniform(-0.3, 0.3, SR // 2), SR)
    support = root / "support"
    for c in ("bird", "car"):
        (support / c).mkdir(parents=True)
        for i in range(2):
            sf.write(support / c / f"{i}.wav", rng.uniform(-0.3, 0.3, SR // 4), SR)
    return root, ckpt, wav, support


def one_error(err: str, path) -> str:
    """The only ``error:`` line of ``err``; it names ``path``."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert printable(os.fspath(path)) in lines[0], lines[0]
    assert "Traceback" not in err and "Errno" not in err, err
    return lines[0]


def snapshot(*folders: Path) -> dict[Path, bytes]:
    """Every file under ``folders`` with its bytes (what a failed job must leave as it was)."""
    return {p: p.read_bytes() for f in folders for p in sorted(Path(f).rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------- the verbs

FILE_VERBS = ("classify", "embed", "enroll", "export")
FOLDER_VERBS = ("shard", "features")


def command(verb: str, setup, out) -> list:
    root, ckpt, wav, support = setup
    return {
        "classify": ["classify", wav, "--checkpoint", ckpt, "--output", out],
        "embed": ["embed", wav, "--checkpoint", ckpt, "--out", out],
        "enroll": ["enroll", support, "--checkpoint", ckpt, "--out", out],
        "export": ["export", "--checkpoint", ckpt, "--out", out],
        "shard": ["shard", support, "--out", out],
        "features": ["features", wav, "--out", out],
    }[verb]


def _work_started(*_, **__):
    raise AssertionError("the work started before the output was checked")


def no_work(monkeypatch, verb: str) -> None:
    """Make the verb's work fail loudly: a refusal must come before it."""
    from sed.inference.classifier import Classifier

    if verb in ("classify", "embed"):
        monkeypatch.setattr(Classifier, "predict" if verb == "classify" else "embed", _work_started)
    else:
        target = {
            "enroll": "sed.inference.fewshot.enroll",
            "export": "sed.export.onnx.export_checkpoint",
            "shard": "sed.data.shards.writer.write_shards",
            "features": "sed.audio.extract.extract_to_files",
        }
        monkeypatch.setattr(target[verb], _work_started)


def bad_destination(kind: str, tmp_path: Path, folder_output: bool) -> tuple[Path, str]:
    """(an output path that cannot be written, a fragment of the reason); ``read_only`` with
    ``output_fault("read_only", tmp_path / "ro")``."""
    if kind == "directory":
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / "keep.txt").write_text("kept")
        return tmp_path / "taken", "is a directory"
    if kind == "file_for_folder":
        (tmp_path / "taken").write_text("kept")
        return tmp_path / "taken", "is not a folder"
    if kind == "parent_is_file":
        (tmp_path / "plain").write_text("kept")
        return tmp_path / "plain" / "deeper" / ("out" if folder_output else "out.bin"), "is not a folder"
    if kind == "read_only":
        (tmp_path / "ro").mkdir()
        return tmp_path / "ro" / ("new" if folder_output else "out.bin"), "Permission denied"
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe")
        return tmp_path / "pipe", "not a regular file"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["directory", "parent_is_file", "read_only", "fifo"])
@pytest.mark.parametrize("verb", FILE_VERBS)
def test_unwritable_file_output_is_one_line_before_the_work(setup, capsys, tmp_path, monkeypatch, verb, kind):
    out, reason = bad_destination(kind, tmp_path, folder_output=False)
    no_work(monkeypatch, verb)
    before = snapshot(tmp_path, setup[0])
    with output_fault("read_only" if kind == "read_only" else "none", tmp_path / "ro"):
        code, stdout, err = run(capsys, *command(verb, setup, out))
    assert code == 2 and stdout == ""
    assert reason in one_error(err, out)
    assert snapshot(tmp_path, setup[0]) == before  # nothing written, nothing partial, inputs untouched


@pytest.mark.parametrize("kind", ["file_for_folder", "parent_is_file", "read_only"])
@pytest.mark.parametrize("verb", FOLDER_VERBS)
def test_unwritable_output_folder_is_one_line_before_the_work(
    setup, capsys, tmp_path, monkeypatch, verb, kind
):
    out, reason = bad_destination(kind, tmp_path, folder_output=True)
    no_work(monkeypatch, verb)
    before = snapshot(tmp_path)
    with output_fault("read_only" if kind == "read_only" else "none", tmp_path / "ro"):
        code, stdout, err = run(capsys, *command(verb, setup, out))
    assert code == 2 and stdout == ""
    assert reason in one_error(err, out)
    assert snapshot(tmp_path) == before and not (tmp_path / "ro" / "new").exists()


# ---------------------------------------------------------------------- a full disk


@pytest.mark.parametrize("verb", ["classify", "embed", "enroll", "shard"])
def test_full_disk_after_the_work_is_one_line_and_leaves_nothing(setup, capsys, tmp_path, monkeypatch, verb):
    out = tmp_path / ("shards" if verb == "shard" else "out.bin")
    argv = command(verb, setup, out)
    with output_fault("full_disk", tmp_path):
        code, stdout, err = run(capsys, *argv)
    assert code == 2 and stdout == ""
    line = one_error(err, out)
    assert "No space left on device" in line
    left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert left == [], left  # no temporary, no partial output


def test_enrolment_on_a_full_disk_is_not_a_torch_enforce_failure(tmp_path):
    model = create_model("cnn_tiny", num_classes=2, labels=["a", "b"], clip_seconds=0.5)
    for name in ("m.pt", "m.safetensors"):
        with output_fault("full_disk", tmp_path), pytest.raises(OutputError) as info:
            save_model(tmp_path / name, model)
        assert str(info.value) == f"{tmp_path / name}: cannot write: No space left on device"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- outputs that are inputs


@pytest.fixture
def inputs(setup, tmp_path):
    """A copy of the setup's files in tmp_path (each test may try to destroy them)."""
    root, ckpt, wav, support = setup
    (tmp_path / "support").mkdir()
    for c in ("bird", "car"):
        (tmp_path / "support" / c).mkdir()
        for f in (support / c).iterdir():
            (tmp_path / "support" / c / f.name).write_bytes(f.read_bytes())
    (tmp_path / "model.pt").write_bytes(ckpt.read_bytes())
    (tmp_path / "x.wav").write_bytes(wav.read_bytes())
    (tmp_path / "link.wav").symlink_to(tmp_path / "x.wav")
    (tmp_path / "link.pt").symlink_to(tmp_path / "model.pt")
    os.link(tmp_path / "x.wav", tmp_path / "hard.wav")
    return tmp_path, tmp_path / "model.pt", tmp_path / "x.wav", tmp_path / "support"


@pytest.mark.parametrize(
    ("verb", "out"),
    [
        ("classify", "x.wav"),
        ("classify", "link.wav"),
        ("classify", "hard.wav"),
        ("classify", "model.pt"),
        ("embed", "x.wav"),
        ("embed", "model.pt"),
        ("enroll", "model.pt"),
        ("enroll", "support/car/1.wav"),
        ("export", "model.pt"),
        ("export", "link.pt"),
    ],
)
def test_an_output_that_is_an_input_is_refused_before_any_work(inputs, capsys, monkeypatch, verb, out):
    root = inputs[0]
    no_work(monkeypatch, verb)
    before = snapshot(root)
    code, stdout, err = run(capsys, *command(verb, inputs, root / out))
    assert code == 2 and stdout == ""
    assert "is an input" in one_error(err, root / out)
    assert snapshot(root) == before and (root / "link.wav").is_symlink()


def test_classify_refuses_an_output_among_the_files_of_a_folder_input(inputs, capsys, monkeypatch):
    root = inputs[0]
    no_work(monkeypatch, "classify")
    before = snapshot(root)
    code, _, err = run(
        capsys,
        "classify",
        root / "support",
        "--checkpoint",
        root / "model.pt",
        "--output",
        root / "support" / "bird" / "0.wav",
    )
    assert code == 2 and "is an input" in one_error(err, root / "support" / "bird" / "0.wav")
    assert snapshot(root) == before


def test_export_refuses_a_file_of_a_checkpoint_folder(tmp_path, capsys, monkeypatch):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    no_work(monkeypatch, "export")
    code, _, err = run(capsys, "export", "--checkpoint", hf, "--out", hf / "config.json")
    assert code == 2 and "is an input" in one_error(err, hf / "config.json")
    assert (hf / "config.json").read_text() == "{}"


def test_an_output_beside_its_inputs_is_written(inputs, capsys):
    root = inputs[0]
    code, _, err = run(
        capsys,
        "classify",
        root / "support",
        "--checkpoint",
        root / "model.pt",
        "--format",
        "csv",
        "--output",
        root / "support" / "preds.csv",
    )
    assert code == 0, err
    assert (root / "support" / "preds.csv").read_text().startswith("file,")


# ---------------------------------------------------------------------- the helper itself


def test_check_output_returns_the_path_of_a_writable_destination(tmp_path):
    assert check_output(tmp_path / "new" / "deeper" / "out.csv") == tmp_path / "new" / "deeper" / "out.csv"
    assert check_output(tmp_path / "folder", kind="folder") == tmp_path / "folder"
    (tmp_path / "old.csv").write_text("replaced atomically")
    assert check_output(tmp_path / "old.csv", inputs=[tmp_path / "missing.wav", None]) == tmp_path / "old.csv"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "no output name"),
        ("x" * 256 + ".csv", "File name too long"),
    ],
)
def test_check_output_refuses_names_the_file_system_cannot_take(tmp_path, name, reason):
    with pytest.raises(OutputError) as info:
        check_output(tmp_path / name if name else name)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_atomic_writes_turn_os_errors_into_one_line_and_keep_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "a\nb.csv"
    out.write_text("old")
    with output_fault("full_disk", tmp_path), pytest.raises(OutputError) as info:
        with atomic_open(out) as f:
            f.write("new")
    assert str(info.value) == f"{printable(str(out))}: cannot write: No space left on device"
    with output_fault("full_disk", tmp_path), pytest.raises(OutputError):
        atomic_save(out, lambda tmp: Path(tmp).write_text("new"))
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        atomic_save(tmp_path / "dir.csv", lambda tmp: Path(tmp).write_text("new"))
    with pytest.raises(OutputError, match="is not a folder"):
        with atomic_open(out / "under.csv") as f:
            f.write("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, "dir.csv"])


def test_an_os_error_about_another_file_is_not_blamed_on_the_output(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_open(tmp_path / "out.txt") as f:
            f.write((tmp_path / "missing.txt").read_text())
    assert list(tmp_path.iterdir()) == []


def test_seld_outputs_are_checked_before_the_work(tmp_path, capsys, monkeypatch):
    pred, ckpt = tmp_path / "pred.csv", tmp_path / "seld.ckpt"
    pred.write_text("0,1,0,10,0\n")
    ckpt.write_bytes(b"a checkpoint")
    monkeypatch.setattr("sed.inference.seld.plot_doa", _work_started)
    monkeypatch.setattr("sed.inference.seld.seld_infer", _work_started)
    code, _, err = run(capsys, "plot-doa", pred, "--out", pred)
    assert code == 2 and "is an input" in one_error(err, pred)
    code, _, err = run(capsys, "plot-doa", pred, "--out", tmp_path)
    assert code == 2 and "is a directory" in one_error(err, tmp_path)
    code, _, err = run(capsys, "seld-infer", pred, "--checkpoint", ckpt, "--out", ckpt)
    assert code == 2 and "is an input" in one_error(err, ckpt)
    (tmp_path / "plain.txt").write_text("kept")
    code, _, err = run(capsys, "seld-infer", pred, "--checkpoint", ckpt, "--out", tmp_path / "plain.txt")
    assert code == 2 and "is not a folder" in one_error(err, tmp_path / "plain.txt")
    assert pred.read_text() == "0,1,0,10,0\n" and ckpt.read_bytes() == b"a checkpoint"
