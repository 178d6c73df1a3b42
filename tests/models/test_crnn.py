"""The DCASE 2024 baseline CRNN (sed.models.crnn) at its tiny test size: frame timing, pooling (the correct
attention and the reference's quirk), lengths, frozen BEATs embeddings, checkpoints and the release importer.
Its agreement with the original code is tests/reference/crnn."""

from __future__ import annotations

import pytest
import torch

from sed.checkpoint import save_model
from sed.errors import CheckpointError
from sed.models import create_model, load_model
from sed.models.family import tiny_kwargs
from sed.models.frames import is_frame_model, pool_frames

TINY = tiny_kwargs("crnn_dcase2024")


@pytest.fixture(autouse=True)
def _no_denormals():
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def tiny(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return create_model("crnn_dcase2024", num_classes=3, **{**TINY, **kwargs}).eval()


def test_frame_timing_of_the_baseline_and_the_tiny_size():
    full = create_model("crnn_dcase2024")
    assert full.frame_hop == pytest.approx(0.064) and full.num_frames(160000) == 156  # 10 s: 156 frames
    assert full.num_classes == 27 and full.embed_dim == 384 and is_frame_model(full)
    model = tiny()
    for n in (500, 1024, 5000, 16000, 16257):
        with torch.no_grad():
            frames, clip = model.forward_frames(torch.randn(2, n) * 0.1)
        assert frames.shape == (2, model.num_frames(n), 3) and clip.shape == (2, 3)
        assert model.num_frames(n) == (1 + max(n, 1025) // 256) // 4
    assert model(torch.randn(2, 16000)).shape == (2, 3)


def test_an_impulse_lights_its_frame():
    """A click on a steady tone (which fixes the per-clip scaling: the tone is the maximum, the floor of
    -50 dB the minimum) changes the frames around it only, most within one frame of its time."""
    model = tiny()
    base = 0.5 * torch.sin(2 * torch.pi * 440 * torch.arange(48000) / 16000)[None]
    with torch.no_grad():
        ref = model.forward_frames(base)[0]
        for t in (0.5, 1.3, 2.4):
            x = base.clone()
            i = int(t * 16000)
            x[0, i : i + 64] += torch.hann_window(64)
            change = (model.forward_frames(x)[0] - ref).abs().sum(-1)[0]
            at = int(t / model.frame_hop)
            assert abs(int(change.argmax()) - at) <= 1
            far = torch.cat([change[: max(at - 3, 0)], change[at + 4 :]])
            assert far.max() < 0.2 * change.max()


def test_attention_pooling_over_time_and_the_reference_quirk_over_classes():
    model = tiny()
    x = torch.randn(2, 7, model.embed_dim)
    probs, clip = model.head.frames(x)
    att = model.head.attention(x)
    torch.testing.assert_close(clip, pool_frames(probs, "attention", att))
    quirk = tiny(**{"attention_over_classes": True})
    quirk.load_state_dict(model.state_dict())
    w = torch.softmax(att, dim=-1).clamp(1e-7, 1)  # the reference: softmax over classes, per frame
    torch.testing.assert_close(quirk.head.frames(x)[1], (probs * w).sum(1) / w.sum(1))
    assert not torch.allclose(quirk.head.frames(x)[1], clip)
    torch.testing.assert_close(model.head(x), torch.logit(clip))  # the head called: clip logits
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    torch.testing.assert_close(model.head.frames(x, mask)[1][0], model.head.frames(x[:1, :4])[1][0])
    torch.testing.assert_close(quirk.head.frames(x, mask)[1][0], quirk.head.frames(x[:1, :4])[1][0])


def test_a_mixed_length_batch_equals_each_clip_alone():
    model = tiny()
    wave = torch.randn(3, 16000) * 0.1
    lengths = torch.tensor([16000, 6000, 700])
    with torch.no_grad():
        frames, clip = model.forward_frames(wave, lengths)
        emb = model.embed(wave, lengths)
        for i, n in enumerate(lengths.tolist()):
            f, c = model.forward_frames(wave[i : i + 1, :n])
            torch.testing.assert_close(frames[i, : f.shape[1]], f[0])
            assert not frames[i, f.shape[1] :].any()
            torch.testing.assert_close(clip[i], c[0])
            torch.testing.assert_close(emb[i], model.embed(wave[i : i + 1, :n])[0])
    feats = model.features(wave, lengths)  # each clip scaled over its own frames, -1 after them
    assert feats.shape[1] == model.frontend.num_frames(16000)
    torch.testing.assert_close(feats[1, :24], model.features(wave[1:2, :6000])[0])
    assert (feats[1, 24:] == -1).all() and feats[0].amin() == -1 and feats[0].amax() == 1


def test_frozen_beats_frame_embeddings_enter_before_the_gru(tmp_path):
    torch.manual_seed(0)
    model = create_model(
        "crnn_dcase2024", num_classes=3, embeddings="beats_micro", embeddings_kwargs={"depth": 1}, **TINY
    )
    assert model.embedding_dim == model.beats.embed_dim and model.project.in_features == 8 + 64
    model.train()
    assert not model.beats.training and not any(p.requires_grad for p in model.beats.parameters())
    wave = torch.randn(2, 16000) * 0.1
    frames, _ = model.forward_frames(wave)
    frames.sum().backward()
    assert all(p.grad is None for p in model.beats.parameters()) and model.project.weight.grad is not None
    model.eval()
    tokens = model.beats.forward_fbank_features(model.beats.features(wave))[1]  # [B, N, D], time-major
    with torch.no_grad():
        got = model.forward_frames(wave)
        want = model.frames_from_features(model.features(wave), embeddings=tokens.transpose(1, 2))
        torch.testing.assert_close(got[0], want[0])
        pooled = torch.nn.functional.adaptive_avg_pool1d(tokens.transpose(1, 2), got[0].shape[1])
        other = model.frames_from_features(
            model.features(wave), embeddings=torch.flip(tokens, (1,)).transpose(1, 2)
        )
    assert pooled.shape == (2, 64, model.num_frames(16000)) and not torch.allclose(other[0], got[0])
    loaded, desc = load_model(save_model(tmp_path / "crnn_beats.pt", model))
    assert desc["model_kwargs"]["embeddings"] == "beats_micro" and desc["model_kwargs"]["embedding_dim"] == 64
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().forward_frames(wave)[0], got[0], rtol=0, atol=0)


def test_precomputed_embeddings_are_required_by_name():
    model = tiny(embedding_dim=16)
    feats = model.features(torch.randn(1, 16000) * 0.1)
    with pytest.raises(ValueError, match=r"takes frame embeddings \[B, D, N\]"):
        model.frames_from_features(feats)
    emb = torch.randn(1, 16, 48)
    frames, clip = model.frames_from_features(feats, torch.tensor([4]), embeddings=emb)
    assert frames.shape == (1, 15, 3)
    seq = model.forward_fbank_pooled(feats, emb)  # valid: the clip pooling over the first 4 frames only
    torch.testing.assert_close(clip, model.head.frames(seq[:, :4])[1])
    with pytest.raises(ValueError, match="frame model"):
        tiny(frame_pooling=None)


def test_save_and_load_round_trip(tmp_path):
    model = tiny(labels=["a", "b", "c"])
    loaded, desc = load_model(save_model(tmp_path / "crnn.pt", model))
    assert desc["model_name"] == "crnn_dcase2024" and loaded.labels == ["a", "b", "c"]
    assert loaded.frame_hop == model.frame_hop == desc["frame_hop"] == pytest.approx(0.064)
    wave = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        for a, b in zip(model.forward_frames(wave), loaded.eval().forward_frames(wave)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def _release(model) -> dict:
    """A state dict of ``model`` in the reference CRNN's names (the release's ``sed_student`` entry)."""
    names = {"0": "conv", "1": "batchnorm", "2": "glu"}
    out = {}
    for k, v in model.state_dict().items():
        parts = k.split(".")
        if parts[0] == "blocks":
            out[f"cnn.cnn.{names[parts[2]]}{parts[1]}." + ".".join(parts[3:])] = v
        elif parts[0] == "rnn":
            out["rnn." + k] = v
        elif parts[0] == "head":
            out[{"dense": "dense", "attention": "dense_softmax"}[parts[1]] + "." + parts[2]] = v
    return out


def test_the_importer_takes_a_bare_state_dict_and_refuses_what_is_not_a_crnn(tmp_path):
    model = tiny(labels=["a", "b", "c"])
    path = tmp_path / "student.pt"
    torch.save(_release(model), path)
    kwargs = {k: TINY[k] for k in ("n_mels", "n_fft", "pooling")}
    loaded = create_model("crnn_dcase2024", pretrained=path, **kwargs).eval()
    assert loaded.sed_kwargs()["attention_over_classes"] is True and loaded.pretrained_report[
        "format"
    ].endswith("(student)")
    assert loaded.num_classes == 3 and loaded.sed_kwargs()["rnn_hidden"] == 8
    x = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_frames(x)[0], model.forward_frames(x)[0])
    with pytest.raises(CheckpointError, match="branch must be one of teacher, student") as err:
        create_model("crnn_dcase2024", pretrained=path, branch="mentor", **kwargs)
    assert "\n" not in str(err.value) and "student.pt" in str(err.value)
    torch.save({"state_dict": {"model.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a DCASE 2024 Task 4 baseline checkpoint"):
        create_model("crnn_dcase2024", pretrained=tmp_path / "other.ckpt")
