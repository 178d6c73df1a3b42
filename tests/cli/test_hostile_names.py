"""File names a hostile user would try: at the file system's length limit, with newlines and escape
sequences, undecodable bytes. Every verb that writes files derived from input names is run on them."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.checkpoint import save_model
from sed.fileio import NAME_MAX, derived_name
from sed.models import create_model
from tests.sedkit_run import run

SR = 16000
LONG = "n" * 251  # + ".wav" = 255 bytes: the longest name the file system takes


def _nbytes(name: str) -> int:
    return len(os.fsencode(name))


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("ast_micro", num_classes=2, input_tdim=100, labels=["a", "b"])
    return save_model(tmp_path_factory.mktemp("ckpt") / "m.pt", model)


@pytest.fixture
def long_wav(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / f"{LONG}.wav"
    sf.write(path, np.random.default_rng(0).uniform(-0.3, 0.3, SR), SR)
    return path


# ------------------------------------------------------------------------------ derived names
def test_derived_name_keeps_short_names_and_cuts_long_ones_deterministically():
    assert derived_name("clip", ".npy") == "clip.npy"
    assert derived_name(LONG, ".npy") == LONG + ".npy"  # 255 bytes: fits
    a, b = derived_name(LONG + "a", ".files.txt"), derived_name(LONG + "b", ".files.txt")
    assert a != b and _nbytes(a) <= NAME_MAX and _nbytes(b) <= NAME_MAX
    assert a.startswith("n" * 200) and a.endswith(".files.txt") and "~" in a
    assert derived_name(LONG + "a", ".files.txt") == a  # a rerun writes the same file
    wide = derived_name("é" * 200, ".npy")  # two bytes a character: cut on a character boundary
    assert _nbytes(wide) <= NAME_MAX and wide.encode("utf-8").decode("utf-8") == wide


# ------------------------------------------------------------------------------ long names
def test_features_of_a_255_byte_name(long_wav, tmp_path, capsys):
    out = tmp_path / "feats"
    code, _, err = run(capsys, "features", long_wav, "--kind", "fbank", "--out", out)
    assert code == 0, err
    assert np.load(out / f"{LONG}.npy").shape[1] == 128
    assert _leftovers(out) == []


def test_classify_output_and_embed_out_of_255_byte_names(long_wav, ckpt, tmp_path, capsys):
    output = tmp_path / f"{'p' * 251}.csv"
    code, _, err = run(
        capsys, "classify", long_wav, "--checkpoint", ckpt, "--format", "csv", "--output", output
    )
    assert code == 0, err
    assert output.read_text().splitlines()[0] == "file,start,end,rank,label,score"
    emb = tmp_path / f"{'e' * 251}.npy"
    code, _, err = run(capsys, "embed", long_wav, "--checkpoint", ckpt, "--out", emb)
    assert code == 0, err
    names = tmp_path / derived_name("e" * 251, ".files.txt")
    assert np.load(emb).shape == (1, 64) and names.read_text() == f"{long_wav}\n"
    assert _leftovers(tmp_path) == []


def test_feature_cache_entry_of_a_255_byte_name(long_wav, tmp_path):
    from sed.audio.features import build_frontend
    from sed.data.modules.feature_cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache", build_frontend("fbank"))
    entry = cache.entry(long_wav)
    assert _nbytes(entry.name) <= NAME_MAX
    assert cache.warm([long_wav], num_threads=1) == [] and cache.is_cached(long_wav)
    os.utime(long_wav, ns=(1, 1))  # a new state of the same file replaces its entry
    assert cache.warm([long_wav], num_threads=1) == [] and len(list(cache.dir.glob("*.npy"))) == 1


def test_seld_infer_csv_of_a_255_byte_name(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_model(
        tmp_path / "seld.pt", create_model("resnet_conformer_tiny", num_classes=3), ["a", "b", "c"]
    )
    wav = tmp_path / f"{LONG}.wav"
    sf.write(wav, np.random.default_rng(0).uniform(-0.1, 0.1, (24000, 4)), 24000)
    out = tmp_path / "pred"
    code, _, err = run(
        capsys,
        "seld-infer",
        wav,
        "--checkpoint",
        ckpt,
        "--out",
        out,
        "--window",
        "1",
        "--hop",
        "1",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert [p.name for p in out.iterdir()] == [f"{LONG}.csv"]


# ------------------------------------------------------------------------------ control characters
HOSTILE = ["new\nline.wav", "\x1b[31mred\x1b[0m.wav", "tab\there.wav", "bidi\u202eroot.wav"]


@pytest.fixture
def hostile_dir(tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    for name in HOSTILE:
        (folder / name).write_bytes(b"RIFF\x00\x00\x00\x00garbage, not audio")
    sf.write(folder / "good\nclip.wav", np.random.default_rng(1).uniform(-0.3, 0.3, SR), SR)
    return folder


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("verb", ["info", "features", "classify"])
def test_every_report_of_a_hostile_name_is_one_line(verb, hostile_dir, ckpt, tmp_path, capsys):
    extra = {"info": [], "features": ["--out", tmp_path / "f"], "classify": ["--checkpoint", ckpt]}[verb]
    code, _, err = run(capsys, verb, hostile_dir, *extra)
    assert code == 1
    lines = err.splitlines()
    assert len(_error_lines(err)) == len(HOSTILE) and all(
        line.startswith(("error: ", "wrote ")) for line in lines
    )
    assert (
        "new\\nline.wav" in err and "\\x1b[31mred" in err and "tab\\there" in err and "bidi\\u202eroot" in err
    )
    assert "\x1b" not in err and "\u202e" not in err


def test_hostile_names_stay_one_row_in_tables_and_csv_and_exact_in_json(hostile_dir, ckpt, capsys):
    good = hostile_dir / "good\nclip.wav"
    _, out, _ = run(capsys, "classify", good, "--checkpoint", ckpt)
    assert len(out.splitlines()) == 2 and "good\\nclip.wav" in out  # header + one row
    _, out, _ = run(capsys, "classify", good, "--checkpoint", ckpt, "--format", "csv", "--top-k", "1")
    assert len(out.splitlines()) == 2
    _, out, _ = run(capsys, "classify", good, "--checkpoint", ckpt, "--format", "json")
    assert [json.loads(line)["file"] for line in out.splitlines()] == [
        str(good)
    ]  # JSON escapes, the name is exact
    _, out, _ = run(capsys, "info", good)
    assert len(out.splitlines()) == 2


def test_undecodable_bytes_in_a_name(tmp_path, capsys):
    folder = tmp_path / "raw"
    folder.mkdir()
    bad = os.fsdecode(b"caf\xe9.wav")  # Latin-1 bytes on a UTF-8 system: a surrogate escape in Python
    (folder / bad).write_bytes(b"not audio at all")
    code, _, err = run(capsys, "info", folder)
    assert code == 1 and len(_error_lines(err)) == 1 and "caf\\udce9.wav" in err


def test_a_list_of_bad_files_is_one_error_line_each_and_names_cannot_forge_lines(capsys):
    from sed.cli.main import Console
    from sed.errors import AudioError, DatasetError

    err = AudioError("x.wav\nerror: forged.wav", "corrupt")
    assert err.path == "x.wav\nerror: forged.wav" and str(err) == "x.wav\\nerror: forged.wav: corrupt"
    Console().error(DatasetError(None, "2 of 5 audio file(s) cannot be used:\na.wav: empty\nb.wav: corrupt"))
    Console().error(err)
    assert capsys.readouterr().err.splitlines() == [
        "error: 2 of 5 audio file(s) cannot be used:",
        "error: a.wav: empty",
        "error: b.wav: corrupt",
        "error: x.wav\\nerror: forged.wav: corrupt",
    ]


# ------------------------------------------------------------------------------ special files
def test_special_files_named_wav_are_reported_for_what_they_are(tmp_path, capsys):
    import socket

    os.mkfifo(tmp_path / "pipe.wav")  # opening it for reading would block forever
    os.symlink("/dev/null", tmp_path / "null.wav")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.wav"))
    try:
        code, _, err = run(
            capsys, "info", tmp_path / "pipe.wav", tmp_path / "null.wav", tmp_path / "sock.wav"
        )
    finally:
        sock.close()
    assert code == 1
    assert _error_lines(err) == [
        f"error: {tmp_path / 'pipe.wav'}: not a regular file (FIFO)",
        f"error: {tmp_path / 'null.wav'}: not a regular file (character device)",
        f"error: {tmp_path / 'sock.wav'}: not a regular file (socket)",
    ]
