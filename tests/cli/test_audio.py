"""`sedkit info` and `sedkit features`: batch behaviour, outputs, exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from sed.cli.main import main


@pytest.fixture
def audio_dir(tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    t = np.arange(16000) / 16000
    sf.write(d / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    sf.write(d / "sub" / "b.flac", 0.3 * np.sin(2 * np.pi * 880 * t[:8000]), 16000)
    sf.write(d / "foa.wav", np.random.uniform(-0.3, 0.3, (24000, 4)), 24000)
    (d / "broken.wav").write_bytes(b"RIFF....garbage")
    return d


def test_info_json_and_bad_file(audio_dir, capsys):
    code = main(
        ["info", str(audio_dir / "a.wav"), str(audio_dir / "broken.wav"), str(audio_dir / "sub"), "--json"]
    )
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert [r["file"].split("/")[-1] for r in rows] == ["a.wav", "b.flac"]
    assert rows[0]["sample_rate"] == 16000 and rows[1]["frames"] == 8000
    assert err.count("error:") == 1 and "broken.wav: not a readable audio file" in err


def test_info_table_all_good(audio_dir, capsys):
    assert main(["info", str(audio_dir / "a.wav"), str(audio_dir / "foa.wav")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["file", "sample_rate", "channels", "frames", "duration", "format", "subtype"]
    assert out[2].split()[1:4] == ["24000", "4", "24000"]


def test_features_fbank_glob_and_folder(audio_dir, tmp_path, capsys):
    out = tmp_path / "feats"
    code = main(
        ["features", str(audio_dir / "*.wav"), str(audio_dir / "sub"), "--kind", "fbank", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 1 and "broken.wav" in err  # the corrupt file is reported, the others written
    a = np.load(out / "a.npy")
    assert a.shape == (98, 128) and np.isfinite(a).all()
    assert np.load(out / "b.npy").shape == (48, 128)
    assert np.load(out / "foa.npy").shape == (98, 128)  # 1 s at 24 kHz, 4 channels: resampled, down-mixed
    assert not list(out.glob(".*tmp"))


def test_features_foa_requires_four_channels(audio_dir, tmp_path, capsys):
    out = tmp_path / "f"
    code = main(
        ["features", str(audio_dir / "foa.wav"), str(audio_dir / "a.wav"), "--kind", "foa", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 1 and "a.wav: has 1 channel(s), expected 4" in err
    assert np.load(out / "foa.npy").shape == (7, 50, 64)
    assert not (out / "a.npy").exists()


def test_features_mic_and_logmel(audio_dir, tmp_path):
    assert main(["features", str(audio_dir / "foa.wav"), "--kind", "mic", "--out", str(tmp_path / "m")]) == 0
    assert np.load(tmp_path / "m" / "foa.npy").shape == (10, 50, 64)
    assert (
        main(
            [
                "features",
                str(audio_dir / "a.wav"),
                "--kind",
                "logmel",
                "--n-mels",
                "40",
                "--out",
                str(tmp_path / "l"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "l" / "a.npy").shape == (1, 51, 40)


def test_missing_input_and_usage_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing*.wav")]) == 1
    assert "no audio files found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["features"])
    assert e.value.code == 2


def test_python_dash_m_entry_point(audio_dir):
    r = subprocess.run(
        [sys.executable, "-m", "sed", "info", str(audio_dir / "a.wav"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and json.loads(r.stdout)["channels"] == 1


@pytest.mark.parametrize(
    "argv,expect",
    [
        (["esc50", "--num-classes", "3", "--clips-per-class", "5", "--duration", "1"], "audio/1-"),
        (["icbhi", "--num-patients", "3", "--duration", "8"], "official_split.txt"),
        (
            ["starss", "--files-per-split", "1", "--duration", "4", "--format", "both"],
            "mic_dev/dev-test-synth",
        ),
        (["desed", "--num-classes", "2", "--clips", "1", "--duration", "1"], "metadata/train/weak.tsv"),
    ],
)
def test_synth_writes_corpus_then_refuses_non_empty(tmp_path, capsys, argv, expect):
    out = tmp_path / "corpus"
    assert main(["synth", *argv, "--out", str(out), "--seed", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["root"] == str(out)
    assert any(expect in str(p.relative_to(out)) for p in out.rglob("*"))
    assert main(["synth", *argv, "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["synth", *argv, "--out", str(out), "--overwrite", "--seed", "3"]) == 0


def test_synth_rejects_options_of_other_corpora(tmp_path, capsys):
    assert main(["synth", "esc50", "--num-patients", "3", "--out", str(tmp_path / "x")]) == 2
    assert "--num-patients does not apply to esc50" in capsys.readouterr().err
