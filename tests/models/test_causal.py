"""The causal TCN family (sed.models.causal): causality, incremental == offline, clip API, checkpoints,
training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sed.checkpoint import save_model
from sed.models import create_model, list_models
from sed.models.causal import TCN_SIZES, TCNModel
from sed.models.loading import load_model

TDIM = 40  # frames of a clip: 0.4 s keeps the tests fast


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN affine parameters and running statistics (the defaults are an identity map)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.weight.data.copy_(1 + 0.3 * torch.randn(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(1 + 0.5 * torch.rand(n, generator=g))


def _model(name: str = "tcn_tiny", **kw) -> TCNModel:
    model = create_model(name, **{"num_classes": 5, "input_tdim": TDIM, **kw}).eval()
    _randomise_bn(model)
    return model


def _wave(seconds: float, b: int = 1, seed: int = 1) -> torch.Tensor:
    return 0.1 * torch.randn(b, round(16000 * seconds), generator=torch.Generator().manual_seed(seed))


def test_sizes_are_registered_and_documented():
    assert set(TCN_SIZES) == set(list_models("tcn_*"))
    rf = {"tcn_tiny": 61, "tcn_small": 1023, "tcn_base": 4095}  # as the module docstring states
    for name, frames in rf.items():
        model = create_model(name, num_classes=50)
        assert model.receptive_field == frames, name
        assert model.receptive_field_samples == (frames - 1) * 160 + 400
    assert sum(p.numel() for p in create_model("tcn_tiny", num_classes=50).parameters()) < 40_000


@pytest.mark.parametrize("name", ["tcn_tiny", "tcn_small"])
def test_a_prefix_does_not_change_when_audio_is_appended(name):
    model = _model(name)
    wave = _wave(1.0, 2)
    with torch.no_grad():
        full = model.frame_logits(wave)
        for cut in (400, 4321, 9000):  # within the first frame's window, mid-frame, a frame boundary
            part = model.frame_logits(wave[:, :cut])
            assert part.shape[1] == model.frontend.num_frames(cut)
            torch.testing.assert_close(part, full[:, : part.shape[1]], rtol=1e-5, atol=1e-5)
        # a change after sample s moves no frame ending at or before s
        loud = wave.clone()
        loud[:, 8000:] += 0.5
        changed = (model.frame_logits(loud) - full).abs().amax(dim=(0, 2)) > 1e-6
        first = int(changed.nonzero()[0])
        assert first * 160 + 400 > 8000 and (first - 1) * 160 + 400 <= 8000


@pytest.mark.parametrize("name", ["tcn_tiny", "tcn_small"])
def test_stream_steps_in_random_chunks_equal_the_whole_signal(name):
    model = _model(name)
    wave = _wave(1.3, 2)
    with torch.no_grad():
        ref = model.frame_embeddings(wave)
    rng = np.random.default_rng(0)
    state, got, i = model.init_stream(2), [], 0
    sizes = set()
    while i < wave.shape[1]:
        n = int(rng.choice([1, 7, 159, 160, 401, 1000, 3333]))
        emb, state = model.stream_step(state, wave[:, i : i + n])
        got.append(emb)
        i += n
        sizes.add(state.nbytes() - state.samples.numel() * 4)  # the caches' size never changes
        assert state.samples.shape[1] < model.frontend.win
    got = torch.cat(got, dim=1)
    assert got.shape == ref.shape and state.frames == ref.shape[1]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    assert len(sizes) == 1
    with torch.no_grad():
        torch.testing.assert_close(model.head(got), model.frame_logits(wave), rtol=1e-5, atol=1e-5)


def test_clip_logits_are_the_head_of_the_mean_frame_embedding():
    model = _model()
    wave = _wave(0.4, 3)
    with torch.no_grad():
        logits = model(wave)
        frames = model.frame_logits(wave)
        torch.testing.assert_close(logits, frames.mean(dim=1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logits, model.forward_from_features(model.features(wave)), rtol=0, atol=0)
        assert model.embed(wave).shape == (3, model.embed_dim)
        assert model(wave[:, :100]).shape == (3, 5)  # shorter than one frame: padded to one


def test_padding_beyond_lengths_does_not_change_logits():
    model = _model()
    wave = _wave(0.4, 2)
    lengths = torch.tensor([3000, 5555])
    junk, clean = wave.clone(), wave.clone()
    for i, n in enumerate(lengths):
        junk[i, n:] = 0.8 * torch.randn(wave.shape[1] - int(n))
        clean[i, n:] = 0.0
    with torch.no_grad():
        a, b = model(junk, lengths), model(clean, lengths)
        alone = model(wave[1:, :5555])
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(a[1:], alone, rtol=1e-5, atol=1e-6)  # equals the unpadded clip


def test_round_trip_through_sed_config_and_checkpoints(tmp_path):
    model = _model("tcn_small", labels=list("abcde"), input_tdim=None, clip_seconds=0.5)
    cfg = json.loads(json.dumps(model.sed_config))
    assert (
        cfg["name"] == "tcn_small"
        and cfg["kwargs"]["input_tdim"] == 48
        and cfg["kwargs"]["stem_channels"] == 8
    )
    clone = create_model(cfg["name"], **cfg["kwargs"]).eval()
    assert clone.sed_kwargs() == model.sed_kwargs()
    path = save_model(tmp_path / "tcn.pt", model)
    loaded, desc = load_model(path)
    assert (
        isinstance(loaded, TCNModel) and desc["model_name"] == "tcn_small" and loaded.labels == list("abcde")
    )
    assert desc["clip_samples"] == model.clip_samples == 47 * 160 + 400
    wave = _wave(0.7, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave), model(wave), rtol=0, atol=0)
        torch.testing.assert_close(loaded.frame_logits(wave), model.frame_logits(wave), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:You are trying to")
def test_trains_through_the_classification_task():
    from sed.tasks import ClassificationTask

    task = ClassificationTask(
        model_name="tcn_tiny",
        num_classes=3,
        model_kwargs={"input_tdim": TDIM},
        freqm=8,
        timem=8,
        lr=3e-3,
        transfer="last_n",
        finetune_blocks=2,
    )
    opt = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=3e-3)
    task.train()
    batch = {
        "wave": _wave(0.4, 4),
        "label": torch.tensor([0, 1, 2, 0]),
        "lengths": torch.tensor([6640, 6640, 5000, 6640]),
    }
    loss = task.training_step(batch, 0)
    loss.backward()
    assert (
        task.model.blocks[-1].conv2.weight.grad is not None and task.model.blocks[0].conv1.weight.grad is None
    )
    opt.step()
    assert torch.isfinite(loss)


def test_stream_step_needs_eval_mode_and_bad_sizes_are_refused():
    model = _model()
    model.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        model.stream_step(model.init_stream(), torch.zeros(1000))
    with pytest.raises(ValueError, match="1..16 blocks"):
        create_model("tcn_tiny", depth=40)
    with pytest.raises(ValueError, match=r"features \[B, frames, 64\]"):
        model.forward_from_features(torch.zeros(1, 10, 32))
