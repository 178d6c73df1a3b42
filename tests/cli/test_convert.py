"""`sedkit convert`: a training checkpoint (.ckpt) as the self-describing model file that README's
examples use (model.pt / model.safetensors); the converted file scores as the checkpoint does."""

import numpy as np
import pytest
import torch

from sed.checkpoint import read_checkpoint, save_model
from sed.cli.main import main
from sed.inference.classifier import Classifier
from sed.models import create_model

LABELS = ["dog", "rain", "siren"]


@pytest.fixture
def training_ckpt(tmp_path):
    """A checkpoint laid out as sed training writes it: ``sed_meta``, the task's ``model.``-prefixed weights
    beside other modules' (a mean teacher), optimiser state."""
    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=3, labels=LABELS, clip_seconds=1.0).eval()
    desc, _ = read_checkpoint(save_model(tmp_path / "ref.pt", model))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"teacher.{k}": torch.zeros_like(v) for k, v in model.state_dict().items()})
    path = tmp_path / "best-epoch=3.ckpt"
    torch.save(
        {
            "epoch": 3,
            "sed_meta": {**desc, "state_dict_prefix": "model."},
            "state_dict": state,
            "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}}],
        },
        path,
    )
    return path


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_convert_round_trip_scores_as_the_checkpoint(training_ckpt, tmp_path, suffix, capsys):
    out = tmp_path / f"model{suffix}"
    assert main(["convert", "--checkpoint", str(training_ckpt), "--out", str(out)]) == 0
    assert f"wrote {out}: cnn_tiny, 3 labels, 16000 Hz" in capsys.readouterr().err
    desc, state = read_checkpoint(out)
    assert desc["labels"] == LABELS and "state_dict_prefix" not in desc
    assert not any(k.startswith(("model.", "teacher.")) for k in state)  # the model's own weights only
    wave = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 16000)).astype(np.float32))
    ref, new = Classifier.from_pretrained(str(training_ckpt)), Classifier.from_pretrained(str(out))
    assert new.labels == ref.labels == LABELS
    with torch.no_grad():
        assert torch.equal(ref.model(wave), new.model(wave))


def test_convert_refuses_a_file_without_a_description_and_its_own_input(training_ckpt, tmp_path, capsys):
    foreign = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, foreign)
    assert main(["convert", "--checkpoint", str(foreign), "--out", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {foreign}: has no sed description")
    assert not (tmp_path / "m.pt").exists()
    assert main(["convert", "--checkpoint", str(training_ckpt), "--out", str(training_ckpt)]) == 2
    assert "is an input" in capsys.readouterr().err
    assert read_checkpoint(training_ckpt)[0]["model_name"] == "cnn_tiny"  # left as it was
