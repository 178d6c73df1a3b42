"""Classifier: batched clip mode, sliding windows read block-wise, embeddings."""

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.checkpoint import describe
from sed.inference.classifier import Classifier
from sed.models import create_model

LABELS = ["a", "b", "c"]
SR = 16000


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(2)
    model = create_model("ast_micro", num_classes=3, input_tdim=100, labels=LABELS).eval()
    return Classifier(model, describe(model), device="cpu")


def noise(seconds, seed):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-0.3, 0.3, int(SR * seconds)).astype(np.float32))


def test_clip_scores_equal_a_direct_forward(clf):
    waves = [noise(1.0, 0), noise(0.5, 1), noise(3.0, 2)]
    res = clf.score(waves, batch_size=2)
    for w, r in zip(waves, res):
        with torch.no_grad():
            ref = torch.softmax(clf.model(w[None, : clf.clip_samples]), -1)[0].numpy()
        assert np.allclose(r.scores, ref, atol=1e-5)
    assert res[2].note and "scored the head" in res[2].note and res[0].note is None


def test_batching_does_not_change_scores(clf):
    waves = [noise(s, i) for i, s in enumerate([0.3, 1.0, 0.7, 2.0, 0.9])]
    one = [r.scores for r in clf.score(waves, batch_size=1)]
    many = [r.scores for r in clf.score(waves, batch_size=4)]
    assert np.allclose(np.stack(one), np.stack(many), atol=1e-5)


def test_predict_top_k_and_multi_label(clf):
    w = noise(1.0, 3)
    p = clf.predict([w], top_k=2)[0]
    assert [t["label"] for t in p["top_k"]] != [] and len(p["top_k"]) == 2
    assert p["top_k"][0]["score"] >= p["top_k"][1]["score"]
    soft = clf.score([w])[0].scores
    sig = clf.score([w], multi_label=True)[0].scores
    assert soft.sum() == pytest.approx(1.0, abs=1e-5) and not np.isclose(sig.sum(), 1.0)
    with torch.no_grad():
        assert np.allclose(sig, torch.sigmoid(clf.model(w[None]))[0].numpy(), atol=1e-5)


def test_windows_from_a_file_equal_scoring_each_slice(clf, tmp_path):
    x = noise(3.5, 4).numpy()
    path = tmp_path / "long.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    r = clf.score([path], window=1.0, hop=0.5, aggregate="max")[0]
    spans = [(round(s, 3), round(e, 3)) for s, e, _ in r.windows]
    assert spans == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5), (2.0, 3.0), (2.5, 3.5)]
    for s, e, sc in r.windows:
        seg = torch.from_numpy(x[int(s * SR): int(e * SR)])
        ref = clf.score([seg])[0].scores
        assert np.allclose(sc, ref, atol=1e-5)
    assert np.allclose(r.scores, np.stack([w[2] for w in r.windows]).max(0))


def test_window_tail_and_short_file(clf, tmp_path):
    sf.write(tmp_path / "a.wav", noise(2.3, 5).numpy(), SR)
    sf.write(tmp_path / "b.wav", noise(0.4, 6).numpy(), SR)
    ra, rb = clf.score([tmp_path / "a.wav", tmp_path / "b.wav"], window=1.0, hop=1.0)
    assert [(round(s, 2), round(e, 2)) for s, e, _ in ra.windows] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.3)]
    assert [(round(s, 2), round(e, 2)) for s, e, _ in rb.windows] == [(0.0, 0.4)]
    assert np.allclose(ra.scores, np.stack([w[2] for w in ra.windows]).mean(0))


def test_resampling_and_downmix_follow_the_checkpoint(clf, tmp_path):
    x = noise(1.0, 7).numpy()
    stereo = np.stack([x, x], 1)
    import torchaudio.functional as AF

    x44 = AF.resample(torch.from_numpy(x), SR, 44100).numpy()
    sf.write(tmp_path / "s.wav", np.stack([x44, x44], 1), 44100, subtype="FLOAT")
    sf.write(tmp_path / "m.wav", stereo, SR, subtype="FLOAT")
    r44, rm = clf.score([tmp_path / "s.wav", tmp_path / "m.wav"])
    assert np.allclose(rm.scores, clf.score([torch.from_numpy(x)])[0].scores, atol=1e-5)
    assert np.allclose(r44.scores, rm.scores, atol=2e-2)


def test_bad_file_is_reported_and_others_go_on(clf, tmp_path):
    sf.write(tmp_path / "ok.wav", noise(1.0, 8).numpy(), SR)
    (tmp_path / "bad.wav").write_bytes(b"garbage" * 10)
    res = clf.predict([tmp_path / "bad.wav", tmp_path / "ok.wav"])
    assert "bad.wav: not a readable audio file" in res[0]["error"] and "top_k" not in res[0]
    assert len(res[1]["top_k"]) == 3


def test_embed_shapes_and_values(clf):
    waves = [noise(1.0, 9), noise(0.6, 10)]
    emb, results = clf.embed(waves, batch_size=2)
    assert emb.shape == (2, 64) and all(r.error is None for r in results)
    with torch.no_grad():
        assert np.allclose(emb[0], clf.model.embed(waves[0][None])[0].numpy(), atol=1e-5)


def test_bf16_runs_and_is_close(clf):
    w = noise(1.0, 11)
    bf = Classifier(clf.model, clf.meta, device="cpu", precision="bf16").score([w])[0].scores
    assert np.allclose(bf, clf.score([w])[0].scores, atol=0.05)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = clf.model(w[None])
    assert logits.dtype == torch.bfloat16
    # the softmax of the bf16 logits is taken in float32, not rounded to bf16's 8 bits
    assert np.allclose(bf, torch.softmax(logits.float(), -1)[0].numpy(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown precision"):
        Classifier(clf.model, clf.meta, device="cpu", precision="int3")


def test_package_level_from_pretrained(clf, tmp_path):
    import sed
    from sed.checkpoint import save_model

    path = save_model(tmp_path / "m.safetensors", clf.model)
    loaded = sed.Classifier.from_pretrained(path, device="cpu")
    w = noise(1.0, 12)
    assert loaded.labels == LABELS
    assert np.allclose(loaded.score([w])[0].scores, clf.score([w])[0].scores, atol=1e-6)


@pytest.mark.parametrize("name", ["beats_micro", "ced_tiny", "efficientat_mn04"])
def test_native_length_families_score_each_clip_whole_and_alone(name):
    torch.manual_seed(0)
    kwargs = {"depth": 2} if name.startswith("ced") else {}
    model = create_model(name, num_classes=3, **kwargs).eval()
    clf = Classifier(model, describe(model), device="cpu")
    rate = clf.sample_rate
    waves = [noise(s * rate / SR, i) for i, s in enumerate([3.0, 12.0, 0.5])]
    res = clf.score(waves, batch_size=3)  # one padded batch: each clip at its own length
    for w, r in zip(waves, res):
        with torch.no_grad():
            alone = torch.softmax(model(w[None]), -1)[0].numpy()
        assert np.allclose(r.scores, alone, atol=1e-5)
        assert r.note is None  # 12 s is longer than the 10-s training clip: still scored whole
    padded = torch.zeros(1, clf.clip_samples)  # what the 3-s clip was before: padded to the 10-s training clip
    padded[0, : waves[0].numel()] = waves[0]
    emb, _ = clf.embed(waves[:1])
    with torch.no_grad():
        assert np.allclose(emb[0], model.embed(waves[0][None])[0].numpy(), atol=1e-5)
        assert not np.allclose(emb[0], model.embed(padded)[0].numpy(), atol=1e-3 * np.abs(emb).max())


def test_beats_scores_the_head_of_a_file_past_its_30_s_limit():
    torch.manual_seed(0)
    model = create_model("beats_micro", num_classes=3).eval()
    clf = Classifier(model, describe(model), device="cpu")
    assert clf.max_samples == 30 * SR and clf.clip_samples < clf.max_samples
    res = clf.score([noise(32.0, 7)])[0]
    assert "32.0 s long, the model takes 30.00 s in one piece; scored the head" in res.note
    with torch.no_grad():
        head = torch.softmax(model(noise(32.0, 7)[None, : 30 * SR]), -1)[0].numpy()
    assert np.allclose(res.scores, head, atol=1e-5)
