"""Classifier: batched clip mode, sliding windows read block-wise, embeddings."""

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.checkpoint import describe
from sed.inference.classifier import Classifier
from sed.models import create_model
from sed.models.family import families, tiny_kwargs

LABELS = ["a", "b", "c"]
SR = 16000


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(2)
    model = create_model("ast_micro", num_classes=3, input_tdim=100, labels=LABELS).eval()
    return Classifier(model, describe(model), device="cpu")


def noise(seconds, seed):
    return torch.from_numpy(
        np.random.default_rng(seed).uniform(-0.3, 0.3, int(SR * seconds)).astype(np.float32)
    )


def centre(wave, n):
    """The centre ``n`` samples of ``wave`` (all of a shorter one; written out here, not taken from sed)."""
    start = max(0, (wave.shape[-1] - n) // 2)
    return wave[..., start : start + n]


def test_clip_scores_equal_a_direct_forward(clf):
    waves = [noise(1.0, 0), noise(0.5, 1), noise(3.0, 2)]
    res = clf.score(waves, batch_size=2)
    for w, r in zip(waves, res):
        with torch.no_grad():
            ref = torch.softmax(clf.model(centre(w, clf.clip_samples)[None]), -1)[0].numpy()
        assert np.allclose(r.scores, ref, atol=1e-5)
    assert res[2].cropped == pytest.approx(clf.clip_samples / SR) and res[0].cropped is res[1].cropped is None


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
        seg = torch.from_numpy(x[int(s * SR) : int(e * SR)])
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


@pytest.mark.parametrize("name", [f.test_size for f in families() if f.length_policy == "native"])
def test_native_length_families_score_each_clip_whole_and_alone(name):
    torch.manual_seed(0)
    # the family's test size at its own training clip (10 s): the clips below are shorter and longer than it
    kwargs = {k: v for k, v in tiny_kwargs(name).items() if k not in ("input_tdim", "clip_seconds")}
    model = create_model(name, num_classes=3, **kwargs).eval()
    clf = Classifier(model, describe(model), device="cpu")
    rate = clf.sample_rate
    waves = [noise(s * rate / SR, i) for i, s in enumerate([3.0, 12.0, 0.5])]
    res = clf.score(waves, batch_size=3)  # one padded batch: each clip at its own length
    multi = clf.meta["multi_label"]  # a frame model (the CRNN): per-class sigmoid scores
    assert multi == (getattr(model, "frame_pooling", None) is not None)
    for w, r in zip(waves, res):
        with torch.no_grad():
            logits = model(w[None])
            alone = (torch.sigmoid(logits) if multi else torch.softmax(logits, -1))[0].numpy()
        assert np.allclose(r.scores, alone, atol=1e-5)
        assert r.cropped is None  # 12 s is longer than the 10-s training clip: still scored whole
    padded = torch.zeros(
        1, clf.clip_samples
    )  # what the 3-s clip was before: padded to the 10-s training clip
    padded[0, : waves[0].numel()] = waves[0]
    emb, _ = clf.embed(waves[:1])
    with torch.no_grad():
        assert np.allclose(emb[0], model.embed(waves[0][None])[0].numpy(), atol=1e-5)
        assert not np.allclose(emb[0], model.embed(padded)[0].numpy(), atol=1e-3 * np.abs(emb).max())


def test_beats_scores_the_centre_of_a_file_past_its_30_s_limit():
    torch.manual_seed(0)
    model = create_model("beats_micro", num_classes=3).eval()
    clf = Classifier(model, describe(model), device="cpu")
    assert clf.max_samples == 30 * SR and clf.clip_samples < clf.max_samples
    res = clf.score([noise(32.0, 7)])[0]
    assert res.cropped == 30.0
    with torch.no_grad():
        mid = torch.softmax(model(noise(32.0, 7)[None, SR : 31 * SR]), -1)[0].numpy()
    assert np.allclose(res.scores, mid, atol=1e-5)


# ---------------------------------------------------------------------------------- one crop policy
@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
    """An ESC-50-layout corpus of 3-s clips, and an AST checkpoint whose clip (1.015 s) is shorter."""
    from sed.data.synth.corpora import make_esc50

    root = tmp_path_factory.mktemp("long")
    make_esc50(root / "esc", seed=0, num_classes=2, clips_per_class=5, duration=3.0, sample_rate=SR)
    from sed.data.modules.audio import AudioDataModule

    labels = AudioDataModule(source="esc50", root=str(root / "esc")).label_names
    torch.manual_seed(4)
    model = create_model("ast_micro", num_classes=2, input_tdim=100, labels=labels).eval()
    from sed.checkpoint import save_model

    return root / "esc", save_model(root / "m.pt", model, labels)


def test_a_long_file_scores_what_the_test_and_predict_loaders_score(long_corpus):
    """classify and the data module's evaluation path (``sedkit test``/``predict``) cut one crop."""
    from sed.data.modules.audio import AudioDataModule
    from sed.tasks.classification import ClassificationTask

    corpus, ckpt = long_corpus
    clf = Classifier.from_pretrained(ckpt, device="cpu")
    dm = AudioDataModule(
        source="esc50",
        root=str(corpus),
        clip_seconds=clf.clip_samples / SR,
        test_folds=[5],
        val_folds=[4],
        batch_size=2,
    )
    dm.setup("test")
    task = ClassificationTask(
        model_name="ast_micro", num_classes=2, labels=clf.labels, model_kwargs={"input_tdim": 100}
    ).eval()
    task.model.load_state_dict(clf.model.state_dict())
    with torch.no_grad():
        loader = [task.predict_step(b, i) for i, b in enumerate(dm.test_dataloader())]
    paths = [p for out in loader for p in out["path"]]
    expected = torch.cat([out["scores"] for out in loader]).numpy()
    results = clf.score(paths, batch_size=3)
    assert len(paths) == 2 and all(r.cropped == pytest.approx(clf.clip_samples / SR) for r in results)
    assert np.allclose(np.stack([r.scores for r in results]), expected, atol=1e-6)
    # and that is the centre: not the head, which scores differently
    wave = torch.from_numpy(sf.read(paths[0], dtype="float32")[0])
    with torch.no_grad():
        mid, head = (
            torch.softmax(clf.model(w[None]), -1)[0].numpy()
            for w in (centre(wave, clf.clip_samples), wave[: clf.clip_samples])
        )
    assert np.allclose(results[0].scores, mid, atol=1e-6) and not np.allclose(
        results[0].scores, head, atol=1e-4
    )


def test_classify_notes_once_how_many_files_it_cut_to_their_centre(long_corpus, tmp_path, capsys):
    from sed.cli.main import main

    corpus, ckpt = long_corpus
    short = tmp_path / "short.wav"
    sf.write(short, noise(0.5, 9).numpy(), SR)
    long_files = sorted(map(str, (corpus / "audio").glob("*.wav")))[:3]
    assert main(["classify", *long_files, str(short), "--checkpoint", str(ckpt), "--format", "json"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "note: 3 files longer than the model's clip were scored on their centre 1.01 s "
        "(--window scores all of a long file)"
    ]
    assert (
        main(
            [
                "embed",
                *long_files[:1],
                str(short),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "e.npy"),
            ]
        )
        == 0
    )
    assert (
        "note: 1 file longer than the model's clip was scored on its centre 1.01 s" in capsys.readouterr().err
    )


# ------------------------------------------------------------------------------- the wrong kind of checkpoint
@pytest.fixture(scope="module")
def seld_checkpoint(tmp_path_factory):
    from sed.checkpoint import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seld") / "seld.pt"
    return save_model(path, create_model("resnet_conformer_tiny", num_classes=3), LABELS)


@pytest.mark.parametrize("verb", ["classify", "embed"])
def test_a_seld_checkpoint_given_to_a_clip_verb_is_one_line_naming_seld_infer(
    verb, seld_checkpoint, tmp_path, capsys
):
    from sed.cli.main import main

    wav = tmp_path / "a.wav"
    sf.write(wav, noise(1.0, 10).numpy(), SR)
    out = ["--out", str(tmp_path / "e.npy")] if verb == "embed" else []
    assert main([verb, str(wav), "--checkpoint", str(seld_checkpoint), *out]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: {seld_checkpoint}: a SELD model (resnet_conformer_tiny); sedkit seld-infer "
        "takes it, this command takes a clip classifier"
    ]
    assert not (tmp_path / "e.npy").exists()


def test_a_clip_checkpoint_given_to_seld_infer_is_one_line_naming_classify(long_corpus, tmp_path, capsys):
    from sed.cli.main import main

    _, ckpt = long_corpus
    wav = tmp_path / "foa.wav"
    sf.write(wav, np.zeros((24000, 4), np.float32), 24000)
    assert main(["seld-infer", str(wav), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {ckpt}: a clip classifier (ast_micro); sedkit classify, embed, ensemble-eval, stream, "
        "enroll or export take it, this command takes a SELD model"
    ]
