"""Frame heads on the clip families (issue 24): ``frame_pooling`` makes AST, BEATs, CED, EfficientAT, the CNN
students and the causal TCNs frame models (:mod:`sed.models.frames`). One test size per family at its
declared test kwargs (1 s of audio, tiny widths)."""

import numpy as np
import pytest
import torch

from sed.checkpoint import describe, save_model
from sed.errors import CheckpointError
from sed.models import create_model
from sed.models.family import family_of_model, family_test_sizes, tiny_kwargs
from sed.models.frames import FrameHead, clip_logits, is_frame_model, pool_frames
from sed.models.loading import build_from_description, load_model

FAMILIES = ("ast", "beats", "ced", "efficientat", "cnn", "tcn")
SIZES = [n for n in family_test_sizes() if family_of_model(n).name in FAMILIES]
#: CED with chunks of 2 patches (target_length 40 frames -> 32-frame chunks): its chunked path in 1 s
CASES = [(n, {}) for n in SIZES] + [("ced_tiny", {"target_length": 40})]
CASE_IDS = [n for n in SIZES] + ["ced_tiny-chunked"]

#: (lowest, highest) offset of the frame an impulse at t lights from the frame containing t, and why:
IMPULSE_TOLERANCE = {
    # 16-frame patches every 10 fbank frames overlap: a click is also in the patch one hop earlier
    "ast": (-1, 0),
    # the 25 ms fbank windows of a patch's first frames reach back into the previous patch
    "beats": (-1, 0),
    "ced": (-1, 0),
    # 'same'-padded stride-2 convolutions centre output frame i on input frame 32 i (i * hop, not the middle
    # of [i hop, (i + 1) hop)), so a click in the second half of a hop is nearer frame i + 1
    "cnn": (0, 1),
    "efficientat": (0, 1),
    # causal: the click changes every later frame in the receptive field too (dilations spread it to k + 1,
    # k + 2, k + 4, ...), so the frame it lights is the first that changes, and nothing before it changes;
    # that is the first 25 ms window (starting at its frame) that reaches the click: k - 2 or k - 1
    "tcn": (-2, -1),
}


@pytest.fixture(autouse=True)
def _no_denormals():
    torch.set_flush_denormal(True)  # random-weight MobileNets make denormals, 100x slower on CPUs
    yield
    torch.set_flush_denormal(False)


def _model(name: str, pooling: str | None = "attention", classes: int = 4, **extra):
    torch.manual_seed(0)
    model = create_model(name, num_classes=classes, frame_pooling=pooling, **{**tiny_kwargs(name), **extra})
    return model.eval()


def _noise(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- the head's pooling, by hand
def test_frame_head_pooling_is_exact_on_hand_made_arrays():
    p = torch.tensor([[[0.2, 0.9], [0.6, 0.1], [0.8, 0.5]]], dtype=torch.float64)  # [1, 3 frames, 2]
    att = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [2.0, 0.0]]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    w = np.exp(att[0].numpy())
    w = w / w.sum(0)
    pn = p[0].numpy()
    refs = {
        "attention": ((pn * w).sum(0) / w.sum(0), None),
        "linear_softmax": ((pn**2).sum(0) / pn.sum(0), [(0.04 + 0.36) / 0.8, (0.81 + 0.01) / 1.0]),
        "max": (pn.max(0), [0.6, 0.9]),
        "mean": (pn.mean(0), [0.4, 0.5]),
    }
    w2 = np.exp(att[0, :2].numpy())
    w2 = w2 / w2.sum(0)
    refs["attention"] = (refs["attention"][0], (pn[:2] * w2).sum(0) / w2.sum(0))
    for pooling, (full, masked) in refs.items():
        got = pool_frames(p, pooling, att if pooling == "attention" else None)
        np.testing.assert_allclose(got[0].numpy(), full, rtol=1e-12, err_msg=pooling)
        got = pool_frames(p, pooling, att if pooling == "attention" else None, mask)
        np.testing.assert_allclose(got[0].numpy(), masked, rtol=1e-12, err_msg=pooling)
    e = np.e  # class 0 by hand: weights e^0, e^1, e^2 over the three frames (e^0, e^1 over the valid two)
    want = [(0.2 + 0.6 * e + 0.8 * e * e) / (1 + e + e * e), (0.9 * e + 0.1 + 0.5) / (e + 2)]
    np.testing.assert_allclose(pool_frames(p, "attention", att)[0].numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(pool_frames(p, "attention", att, mask)[0, 0].item(), (0.2 + 0.6 * e) / (1 + e))
    with pytest.raises(ValueError, match="unknown frame pooling 'sum'"):
        FrameHead(8, 2, "sum")


def test_frame_head_is_a_linear_sigmoid_per_frame():
    head = FrameHead(3, 2, "max")
    x = torch.randn(2, 5, 3)
    probs, clip = head(x)
    torch.testing.assert_close(probs, torch.sigmoid(x @ head.dense.weight.T + head.dense.bias))
    torch.testing.assert_close(clip, probs.amax(1))


# ---------------------------------------------------------------------- every family
@pytest.mark.parametrize(("name", "extra"), CASES, ids=CASE_IDS)
def test_shapes_and_num_frames_at_many_lengths(name, extra):
    model = _model(name, **extra)
    sr = model.sample_rate
    assert is_frame_model(model) and model.frame_hop > 0
    assert model.sed_kwargs()["frame_pooling"] == "attention"
    # short, odd and long lengths (EfficientAT's reflect padding needs more than 512 samples)
    for n in (600, 2801, sr // 2 + 1, sr - 1, sr + 4099):
        with torch.no_grad():
            frames, clip = model.forward_frames(_noise(1, n, n))
        assert frames.shape == (1, model.num_frames(n), 4), n
        assert clip.shape == (1, 4) and bool(((frames >= 0) & (frames <= 1)).all())
    if model.fixed_frames:  # padded or cut to the clip: the same frames for any input
        assert model.num_frames(600) == model.num_frames(5 * sr)


@pytest.mark.parametrize(("name", "extra"), CASES, ids=CASE_IDS)
def test_a_clip_padded_in_a_batch_gives_the_frames_it_gives_alone(name, extra):
    model = _model(name, **extra)
    sr = model.sample_rate
    wave = _noise(3, sr, 1)
    lengths = torch.tensor([sr, int(0.43 * sr) + 3, int(0.71 * sr)])
    wave[1, lengths[1] :] = 0.0
    wave[2, lengths[2] :] = 0.0
    with torch.no_grad():
        frames, clip = model.forward_frames(wave, lengths)
        for row, n in enumerate(lengths.tolist()):
            alone, alone_clip = model.forward_frames(wave[row : row + 1, :n])
            valid = model.valid_frames(torch.tensor([n]), frames.shape[1])[0]
            assert alone.shape[1] >= valid
            torch.testing.assert_close(frames[row, :valid], alone[0, :valid], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(clip[row], alone_clip[0], rtol=1e-5, atol=1e-5)
    # the short clip has frames past its end in the batch, so its clip equality above needs the mask
    assert int(model.valid_frames(lengths[1:2], frames.shape[1])[0]) < frames.shape[1]


@pytest.mark.parametrize(("name", "extra"), CASES, ids=CASE_IDS)
def test_forward_is_the_logit_of_the_pooled_clip_probabilities(name, extra):
    model = _model(name, pooling="linear_softmax", **extra)
    wave = _noise(2, model.sample_rate, 2)
    lengths = torch.tensor([model.sample_rate, model.sample_rate // 2])
    with torch.no_grad():
        torch.testing.assert_close(model(wave, lengths), clip_logits(model.forward_frames(wave, lengths)[1]))
        feats = model.features(wave)
        torch.testing.assert_close(
            model.forward_from_features(feats), clip_logits(model.frames_from_features(feats)[1])
        )
        assert model.embed(wave, lengths).shape == (2, model.embed_dim)  # still the pooled embedding


@pytest.mark.parametrize(("name", "extra"), CASES, ids=CASE_IDS)
def test_an_impulse_at_t_lights_the_frame_at_t(name, extra):
    """Random weights: the frame (of the sequence the frame head maps frame by frame) that changes most when
    a 0.5 ms click is added at t is the frame containing t, within the family's stated tolerance."""
    model = _model(name, **extra)
    family = family_of_model(name).name
    lo, hi = IMPULSE_TOLERANCE[family]
    sr = model.sample_rate
    times = np.linspace(0.05, 0.93, 12)
    clicks = _noise(1, sr, 3).mul(0.1).repeat(len(times) + 1, 1)
    for row, t in enumerate(times, 1):
        clicks[row, int(t * sr) : int(t * sr) + sr // 2000] += 1.0
    with torch.no_grad():
        out = model.frame_sequence(model.features(clicks))
    change = (out[1:] - out[:1]).norm(dim=-1)  # [clicks, frames]
    hop = model.frame_hop * sr
    want = [min(int(int(t * sr) / hop), out.shape[1] - 1) for t in times]
    if family == "tcn":
        lit = [int((c > 0).nonzero()[0]) for c in change]
    else:
        lit = [int(c.argmax()) for c in change]
    offsets = [got - w for got, w in zip(lit, want)]
    assert all(lo <= o <= hi for o in offsets), offsets
    assert len(set(want)) >= 3  # the clicks visit several frames


@pytest.mark.parametrize("name", SIZES)
def test_save_load_round_trip_records_the_frame_rate(tmp_path, name):
    model = _model(name, pooling="max")
    path = save_model(tmp_path / "frames.safetensors", model)
    loaded, desc = load_model(path)
    assert desc["frame_hop"] == pytest.approx(model.frame_hop, abs=1e-12)
    assert desc["model_kwargs"]["frame_pooling"] == "max" and loaded.frame_pooling == "max"
    # its clip scores are per-class sigmoids: classify must not softmax them (a clip model stays single-label)
    assert desc["multi_label"] is True
    assert describe(create_model(name, num_classes=3, **tiny_kwargs(name)))["multi_label"] is False
    wave = _noise(1, model.sample_rate, 4)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.forward_frames(wave)[0], model.forward_frames(wave)[0], rtol=0, atol=0
        )
    state = model.state_dict()
    with pytest.raises(CheckpointError, match="frame_hop 0.5 s contradicts"):
        build_from_description({**desc, "frame_hop": 0.5}, state, "x.pt")
    with pytest.raises(CheckpointError, match="frame_hop -1.0 is not a frame rate"):
        build_from_description({**desc, "frame_hop": -1.0}, state, "x.pt")


@pytest.mark.parametrize("name", [n for n in SIZES if family_of_model(n).importer])
def test_a_clip_checkpoint_gives_a_frame_model_its_encoder_and_a_fresh_head(tmp_path, name):
    clip = _model(name, pooling=None, classes=3)
    assert not is_frame_model(clip) and "frame_hop" not in describe(clip)
    with pytest.raises(ValueError, match="built without frame_pooling"):
        clip.forward_frames(_noise(1, clip.sample_rate))
    path = save_model(tmp_path / "clip.pt", clip)
    torch.manual_seed(1)
    model = create_model(name, pretrained=str(path), frame_pooling="attention").eval()
    assert is_frame_model(model) and model.pretrained_report["reinitialised"] == ["frame_head"]
    mine, theirs = model.state_dict(), clip.state_dict()
    assert {k for k in mine if not k.startswith("frame_head.")} == set(theirs)
    assert all(torch.equal(mine[k], v) for k, v in theirs.items())
    fresh = create_model(name, num_classes=3, frame_pooling="attention", **tiny_kwargs(name))
    assert fresh.frame_head.dense.weight.shape == model.frame_head.dense.weight.shape
    # a frame checkpoint as the start of a clip model: the frame head is dropped, not an error
    frames = save_model(tmp_path / "frames.pt", model)
    back = create_model(name, pretrained=str(frames), frame_pooling=None)
    assert back.frame_head is None and back.pretrained_report["reinitialised"] == []


def test_the_exported_graph_of_a_frame_model_gives_its_pooled_clip_logits():
    """What sed.export.onnx exports (checked by hand through onnxruntime within 5e-7 for cnn_tiny, ast_micro
    and beats_micro frame models at 1/3, 1 and 1.06 clips; the export takes a minute, too long here)."""
    from sed.export.onnx import _Graph

    model = _model("cnn_tiny", pooling="attention", classes=5)
    for samples in (model.clip_samples // 3, model.clip_samples + 999):  # masked padding frames; cut input
        wave = _noise(2, samples, samples)
        with torch.no_grad():
            logits, emb = _Graph(model)(wave)
            torch.testing.assert_close(logits, clip_logits(model.forward_frames(wave)[1]))
            torch.testing.assert_close(emb, model.embed(wave))


def test_a_frame_tcn_streams_through_the_windowed_path_with_its_frame_model_scores():
    from sed.inference.classifier import Classifier
    from sed.inference.stream import Streamer, is_causal

    model = _model("tcn_tiny", pooling="max", classes=3)
    assert is_causal(_model("tcn_tiny", pooling=None)) and not is_causal(model)
    clf = Classifier(model, describe(model), device="cpu")
    wave = _noise(1, 24000, 6)[0]
    hops = list(Streamer(clf, hop=0.5).run([wave]))
    assert [h.time for h in hops] == [0.5, 1.0, 1.5]
    with torch.no_grad():  # the last hop scores the clip that ends there, as the frame model does
        # a frame model's clip scores are per-class sigmoids (its description says multi-label)
        want = torch.sigmoid(model(wave[None, 24000 - model.clip_samples :]))[0].numpy()
    np.testing.assert_allclose(hops[-1].scores, want, atol=1e-5)
