"""seld_infer / plot_doa on synthetic STARSS files, scored with evaluate_dirs."""

import shutil

import numpy as np
import pytest
import torch

from sed.checkpoint import save_model
from sed.data.synth.corpora import make_starss
from sed.inference.seld import infer_file, load_seld_model, plot_doa, seld_infer
from sed.models import create_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("starss_inf")
    make_starss(root, seed=1, files_per_split=2, duration=3.3, num_classes=3)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("resnet_conformer_tiny", num_classes=3)
    with torch.no_grad():  # a confident constant output: every frame gets class 0 at azimuth 0
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[0] = 3.0  # track 0, x, class 0
    path = tmp_path_factory.mktemp("ckpt") / "seld.pt"
    save_model(path, model, ["a", "b", "c"])
    return path


def test_windowed_frames_and_overlap_average(corpus, checkpoint):
    model, _ = load_seld_model(checkpoint, "cpu")
    wav = sorted((corpus / "foa_dev").rglob("*.wav"))[0]
    full = infer_file(model, wav, window=5.0, hop=5.0)
    over = infer_file(model, wav, window=1.0, hop=0.3, batch_size=3)
    assert full.shape == over.shape == (int(3.3 * 24000) // 2400, 27)
    assert np.allclose(over[:, 0], np.tanh(3.0), atol=1e-5)  # averaging constant windows keeps the value
    with pytest.raises(ValueError, match="multiple"):
        infer_file(model, wav, window=1.05, hop=0.5)


def test_seld_infer_then_evaluate(corpus, checkpoint, tmp_path):
    from sed.metrics.seld_eval import evaluate_dirs

    wavs = sorted((corpus / "foa_dev").rglob("*.wav"))
    bad = tmp_path / "fold9_room1_mix001.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    out = tmp_path / "pred"
    results = seld_infer([*wavs, bad], checkpoint, out, window=1.0, hop=0.5, device="cpu")
    errors = {p: e for p, e in results if e}
    assert list(errors) == [str(bad)] and "fold9_room1_mix001" in errors[str(bad)]
    assert sorted(p.stem for p in out.glob("*.csv")) == sorted(w.stem for w in wavs)
    rows = (out / f"{wavs[0].stem}.csv").read_text().splitlines()
    assert len(rows) == 33 and rows[0].startswith("0,0,0,")
    scores, report = evaluate_dirs(out, corpus / "metadata_dev", nb_classes=3)
    assert report["n_evaluated"] == len(wavs) and not report["errors"]
    assert 0.0 <= scores["SELD"] <= 2.0 and scores["LR"] > 0  # class 0 is found wherever it is active


def test_plot_doa_writes_png(corpus, checkpoint, tmp_path):
    wav = sorted((corpus / "foa_dev").rglob("*.wav"))[0]
    seld_infer([wav], checkpoint, tmp_path, window=2.0, hop=2.0, device="cpu")
    ref = next((corpus / "metadata_dev").rglob(f"{wav.stem}.csv"))
    png = plot_doa(tmp_path / f"{wav.stem}.csv", tmp_path / "doa.png", ref_csv=ref)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    shutil.rmtree(tmp_path)


def test_cli_seld_infer_then_eval_and_plot(tmp_path, capsys):
    """`sedkit seld-infer` -> `sedkit seld-eval` -> `sedkit plot-doa` with an untrained tiny model."""
    from sed.checkpoint import save_model
    from sed.cli.main import main
    from sed.data.synth.corpora import make_starss
    from sed.models import create_model

    corpus = tmp_path / "starss"
    make_starss(corpus, seed=2, files_per_split=1, duration=4.0)
    ckpt = save_model(tmp_path / "seld.pt", create_model("resnet_conformer_tiny", num_classes=13).eval())
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    wavs = sorted((corpus / "foa_dev").rglob("*.wav"))
    code = main(
        [
            "seld-infer",
            *map(str, wavs),
            str(bad),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "pred"),
            "--window",
            "2",
            "--hop",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "bad.wav" in err
    assert sorted(p.stem for p in (tmp_path / "pred").glob("*.csv")) == sorted(w.stem for w in wavs)
    assert (
        main(["seld-eval", "--pred", str(tmp_path / "pred"), "--ref", str(corpus / "metadata_dev"), "--json"])
        == 0
    )
    assert "SELD" in capsys.readouterr().out
    ref = sorted((corpus / "metadata_dev").rglob("*.csv"))[0]
    assert main(["plot-doa", str(ref), "--ref", str(ref), "--out", str(tmp_path / "doa.png")]) == 0
    assert (tmp_path / "doa.png").stat().st_size > 1000
