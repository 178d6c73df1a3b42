"""Self-describing checkpoints: round trips, foreign imports through load_model, refusal of pickles."""

import pytest
import torch

from sed.checkpoint import read_checkpoint, save_model
from sed.errors import CheckpointError
from sed.models import create_model
from sed.models.loading import load_model

LABELS = ["dog", "rain", "siren"]


def micro(**kw):
    torch.manual_seed(1)
    return create_model("ast_micro", num_classes=3, input_tdim=100, labels=LABELS, **kw).eval()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_describes_itself(tmp_path, suffix):
    model = micro()
    path = save_model(tmp_path / f"m{suffix}", model, note="unit test")
    loaded, meta = load_model(path)
    wave = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        assert torch.equal(model(wave), loaded(wave))
    assert meta["model_name"] == "ast_micro" and meta["labels"] == LABELS and meta["note"] == "unit test"
    assert meta["sample_rate"] == 16000 and meta["clip_samples"] == model.clip_samples == 99 * 160 + 400
    assert meta["frontend"]["target_length"] == 100 and meta["frontend"]["mean"] == pytest.approx(-4.2677393)
    assert meta["versions"]["torch"] == torch.__version__
    assert loaded.labels == LABELS


def test_lightning_style_checkpoint_loads(tmp_path):
    model = micro()
    desc, _ = read_checkpoint(save_model(tmp_path / "m.pt", model))
    ckpt = {
        "epoch": 3,
        "sed_meta": desc,
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "optimizer_states": [],
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    loaded, meta = load_model(tmp_path / "last.ckpt")
    assert meta["labels"] == LABELS
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(
        {"sed": {"model_name": "ast_micro"}, "state_dict": {}, "x": _Payload(marker)}, tmp_path / "evil.pt"
    )
    with pytest.raises(
        CheckpointError, match=r"evil\.pt: refused: loading it would need arbitrary unpickling"
    ):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="unknown pretrained source"):
        load_model(tmp_path / "missing")
    torch.save(
        {"sed": {"model_name": "no_such_model", "model_kwargs": {}}, "state_dict": {}}, tmp_path / "x.pt"
    )
    with pytest.raises(CheckpointError, match="unknown model 'no_such_model'"):
        load_model(tmp_path / "x.pt")
    model = micro()
    state = model.state_dict()
    state.pop("head.1.bias")
    desc, _ = read_checkpoint(save_model(tmp_path / "ok.pt", model))
    torch.save({"sed": desc, "state_dict": state}, tmp_path / "broken.pt")
    with pytest.raises(
        CheckpointError, match=r"broken\.pt: weights do not fit ast_micro: missing \['head.1.bias'\]"
    ):
        load_model(tmp_path / "broken.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")


def test_sed_checkpoint_is_a_pretrained_source_for_a_new_head(tmp_path):
    model = micro()
    path = save_model(tmp_path / "m.pt", model)
    with pytest.warns(UserWarning, match="re-initialised the classifier head"):
        new = create_model("ast_micro", num_classes=5, pretrained=str(path))
    assert new.num_classes == 5 and new.input_tdim == 100
    assert torch.equal(new.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
    longer = create_model("ast_micro", pretrained=str(path), input_tdim=200)
    assert longer.pos_embed.shape[1] == 12 * 19 + 2 and longer.labels == LABELS
