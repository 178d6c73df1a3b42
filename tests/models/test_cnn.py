"""CNN students (sed.models.cnn): sizes, the shared model API, lengths, checkpoints, training."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sed.checkpoint import save_model
from sed.models import create_model, list_models
from sed.models.cnn import CNN_SIZES, CNNModel
from sed.models.loading import load_model

#: parameter counts with a 50-class head; the tests accept +-30 %
TARGET_PARAMS = {"cnn_tiny": 0.3e6, "cnn_small": 1.0e6, "cnn_base": 3.0e6}
TDIM = 96  # frames: short inputs keep the tests fast


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN affine parameters and running statistics (the zero-initialised residual
    scales would otherwise hide half of the network)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data.copy_(1 + 0.3 * torch.randn(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(1 + 0.5 * torch.rand(n, generator=g))


def _model(name: str = "cnn_tiny", **kw) -> CNNModel:
    model = create_model(name, **{"num_classes": 5, "input_tdim": TDIM, **kw}).eval()
    _randomise_bn(model)
    return model


def _wave(model: CNNModel, b: int = 2, seed: int = 1) -> torch.Tensor:
    return 0.1 * torch.randn(b, model.clip_samples, generator=torch.Generator().manual_seed(seed))


def test_sizes_are_registered():
    assert set(CNN_SIZES) <= set(list_models("cnn_*"))


@pytest.mark.parametrize("name", sorted(CNN_SIZES))
def test_parameter_count_and_output_shape(name):
    model = create_model(name, num_classes=50, input_tdim=TDIM).eval()
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n / 1e6:.3f} M parameters (50 classes)")
    assert abs(n - TARGET_PARAMS[name]) <= 0.3 * TARGET_PARAMS[name], n
    with torch.no_grad():
        out = model(_wave(model, 3))
    assert out.shape == (3, 50) and torch.isfinite(out).all()
    assert len(model.blocks) == len(CNN_SIZES[name]["widths"])
    assert model.head[-1].in_features == model.embed_dim == CNN_SIZES[name]["embed_dim"]


def test_embed_and_feature_map_shapes():
    model = _model(num_mel_bins=128)
    wave = _wave(model, 3)
    with torch.no_grad():
        feats = model.features(wave)
        pooled, fmap = model.forward_features(wave)
        emb = model.embed(wave)
    assert feats.shape == (3, TDIM, 128)
    assert emb.shape == pooled.shape == (3, model.embed_dim)
    assert fmap.shape[:2] == (3, model.embed_dim) and fmap.dim() == 4
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(emb, pooled)


def test_forward_equals_forward_from_features():
    model = _model("cnn_small")
    wave = _wave(model)
    with torch.no_grad():
        a = model(wave)
        b = model.forward_from_features(model.features(wave))
        c = model.head(model.embed(wave))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert not torch.allclose(a[0], a[1])  # the two clips are told apart


def test_create_model_round_trip_rebuilds_identical_model():
    labels = [f"class{i}" for i in range(4)]
    model = create_model("cnn_tiny", num_classes=4, clip_seconds=1.0, labels=labels, depth=4).eval()
    _randomise_bn(model)
    cfg = json.loads(json.dumps(model.sed_config))  # JSON-serialisable
    assert cfg["name"] == "cnn_tiny" and cfg["kwargs"]["labels"] == labels
    assert cfg["kwargs"]["input_tdim"] == 98 and len(cfg["kwargs"]["widths"]) == 4
    clone = create_model(cfg["name"], **cfg["kwargs"]).eval()
    assert clone.sed_kwargs() == model.sed_kwargs()
    assert clone.labels == labels and len(clone.blocks) == 4
    clone.load_state_dict(model.state_dict())
    wave = _wave(model)
    with torch.no_grad():
        torch.testing.assert_close(clone(wave), model(wave), rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_save_and_load(tmp_path, suffix):
    model = _model(labels=list("abcde"))
    path = save_model(tmp_path / f"m{suffix}", model)
    loaded, desc = load_model(path)
    assert isinstance(loaded, CNNModel) and desc["model_name"] == "cnn_tiny"
    assert desc["clip_samples"] == model.clip_samples and desc["frontend"]["num_mel_bins"] == 64
    assert loaded.labels == list("abcde")
    wave = _wave(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave), model(wave))


def test_padding_beyond_lengths_does_not_change_logits():
    model = _model()
    wave = _wave(model, 2)
    lengths = torch.tensor([model.clip_samples // 2, model.clip_samples // 3])
    garbage = wave.clone()
    for i, n in enumerate(lengths):
        garbage[i, n:] = torch.randn(model.clip_samples - int(n))  # loud junk past the end
        wave[i, n:] = 0.0
    with torch.no_grad():
        clean = model(wave, lengths)
        dirty = model(garbage, lengths)
        unmasked = model(garbage)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    assert not torch.allclose(unmasked, clean, atol=1e-4)  # without lengths the junk is heard


def test_clip_samples_and_clip_seconds():
    model = create_model("cnn_tiny", num_classes=2, clip_seconds=2.0)
    assert model.input_tdim == 198 and model.sample_rate == 16000
    fe = model.frontend
    assert fe.num_frames(model.clip_samples) == 198 and fe.num_frames(model.clip_samples - 1) == 197
    assert create_model("cnn_tiny", num_classes=2).input_tdim == 498  # 5 s by default
    with pytest.raises(ValueError, match="contradicting input_tdim"):
        create_model("cnn_tiny", num_classes=2, clip_seconds=2.0, input_tdim=100)
    with pytest.raises(ValueError, match="contradicts num_mel_bins"):
        create_model("cnn_tiny", num_classes=2, input_fdim=128, num_mel_bins=64)
    assert create_model("cnn_tiny", num_classes=2, input_fdim=128).frontend.num_mel_bins == 128


def test_bad_inputs_are_refused():
    model = _model()
    with pytest.raises(ValueError, match=r"features \[B, frames, 64\]"):
        model.forward_from_features(torch.zeros(2, TDIM, 128))
    with pytest.raises(ValueError, match="labels for a 5-class head"):
        model.labels = ["a", "b"]
    with pytest.raises(ValueError, match="depth must be"):
        create_model("cnn_tiny", depth=9)


def test_other_frame_counts_are_accepted():
    model = _model()
    with torch.no_grad():
        out = model.forward_from_features(torch.randn(2, 3 * TDIM, 64))
    assert out.shape == (2, 5)


def test_head_reset_and_replacement():
    model = _model()
    model.labels = list("vwxyz")
    assert model.sed_config["kwargs"]["labels"] == list("vwxyz")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.head[1].weight.add_(1.0)
    model.reset_head()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.1.weight"}  # a fresh draw of the classifier, the rest untouched
    assert after["head.1.weight"].std() < 0.05
    model.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(model.embed_dim, 3))
    with torch.no_grad():
        assert model(_wave(model)).shape == (2, 3)


def test_fine_tune_last_blocks_trains_only_them():
    model = _model()
    model.requires_grad_(False)
    for module in (model.blocks[-2:], model.head):
        module.requires_grad_(True)
    model.train()
    loss = model(_wave(model, 4)).logsumexp(-1).mean()
    loss.backward()
    assert model.stem[0].weight.grad is None and model.blocks[0][0].dw[0].weight.grad is None
    assert model.blocks[-1][-1][0].weight.grad is not None  # the final 1x1 conv is in the last block


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=4, input_tdim=64, drop_rate=0.0)
    feats = torch.randn(8, 64, 64) * 0.5
    target = torch.arange(8) % 4
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model.forward_from_features(feats), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
