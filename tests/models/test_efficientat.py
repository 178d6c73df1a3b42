"""EfficientAT MobileNets: the release .pt layout, the 32 kHz front end, the importer's errors.

The numbers against the original code (run here) are in tests/reference/efficientat. The reference
checkpoint layout below follows github.com/fschmid56/EfficientAT at commit
a425fdce92572e602a1d5634799bd9f1f2efa806: ``models/mn/model.py`` (``MN``: ``features`` =
ConvNormActivation stem + 15 ``InvertedResidual`` + 1x1 ConvNormActivation, ``classifier`` = the
"mlp" head AdaptiveAvgPool2d/Flatten/Linear/Hardswish/Dropout/Linear), ``models/mn/block_types.py``
(``block`` Sequential of expand / depthwise / ``ConcurrentSEBlock.conc_se_layers.0.fc1|fc2`` /
project), ``models/mn/utils.py`` (``make_divisible``) and ``models/preprocess.py`` (``AugmentMelSTFT``
in eval mode with the ``ex_audioset.py`` defaults).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import sed.models.efficientat as effat_mod
from sed.checkpoint import save_model
from sed.data.corpora.audioset import audioset_labels
from sed.errors import CheckpointError
from sed.models.loading import load_model
from sed.models.pretrained import sources
from sed.models.registry import create_model, list_models

SR, HOP = 32000, 320

# MobileNetV3-Large as the reference's _mobilenet_v3_conf: in, kernel, expanded, out, SE, hardswish, stride
TABLE = [
    (16, 3, 16, 16, 0, 0, 1),
    (16, 3, 64, 24, 0, 0, 2),
    (24, 3, 72, 24, 0, 0, 1),
    (24, 5, 72, 40, 1, 0, 2),
    (40, 5, 120, 40, 1, 0, 1),
    (40, 5, 120, 40, 1, 0, 1),
    (40, 3, 240, 80, 0, 1, 2),
    (80, 3, 200, 80, 0, 1, 1),
    (80, 3, 184, 80, 0, 1, 1),
    (80, 3, 184, 80, 0, 1, 1),
    (80, 3, 480, 112, 1, 1, 1),
    (112, 3, 672, 112, 1, 1, 1),
    (112, 5, 672, 160, 1, 1, 2),
    (160, 5, 960, 160, 1, 1, 1),
    (160, 5, 960, 160, 1, 1, 1),
]


def divisible(v, d=8):
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def ref_blocks(width):
    return [
        (divisible(i * width), k, divisible(e * width), divisible(o * width), se, hs, s)
        for i, k, e, o, se, hs, s in TABLE
    ]


def ref_state(width=0.4, num_classes=527, seed=0):
    """A random state dict with the key names, shapes and dtypes of a release ``mnXX_as_*.pt``."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def cna(prefix, cin, cout, k, groups=1):
        sd[f"{prefix}.0.weight"] = (
            torch.randn(cout, cin // groups, k, k, generator=g) * (2 / (cin // groups * k * k)) ** 0.5
        )
        sd[f"{prefix}.1.weight"] = 0.95 + 0.1 * torch.randn(cout, generator=g)
        sd[f"{prefix}.1.bias"] = 0.1 * torch.randn(cout, generator=g)
        sd[f"{prefix}.1.running_mean"] = 0.1 * torch.randn(cout, generator=g)
        sd[f"{prefix}.1.running_var"] = 0.5 + torch.rand(cout, generator=g)
        sd[f"{prefix}.1.num_batches_tracked"] = torch.tensor(1000)

    def linear(prefix, cin, cout):
        sd[f"{prefix}.weight"] = torch.randn(cout, cin, generator=g) / cin**0.5
        sd[f"{prefix}.bias"] = 0.1 * torch.randn(cout, generator=g)

    blocks = ref_blocks(width)
    cna("features.0", 1, blocks[0][0], 3)
    for n, (cin, k, exp, cout, se, _, _) in enumerate(blocks, start=1):
        j = 0
        if exp != cin:
            cna(f"features.{n}.block.0", cin, exp, 1)
            j = 1
        cna(f"features.{n}.block.{j}", exp, exp, k, groups=exp)
        if se:
            j += 1
            sq = divisible(exp // 4)
            linear(f"features.{n}.block.{j}.conc_se_layers.0.fc1", exp, sq)
            linear(f"features.{n}.block.{j}.conc_se_layers.0.fc2", sq, exp)
        cna(f"features.{n}.block.{j + 1}", exp, cout, 1)
    last = blocks[-1][3]
    cna("features.16", last, 6 * last, 1)
    linear("classifier.2", 6 * last, divisible(1280 * width))
    linear("classifier.5", divisible(1280 * width), num_classes)
    return sd


@pytest.fixture(autouse=True)
def _flush_denormals():
    """Randomly initialised MobileNets drive activations into subnormal floats, which are ~100x slower on
    CPU; flushing them (in this thread: one intra-op thread) keeps the file fast. Values that small
    change no comparison here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    path = tmp_path_factory.mktemp("effat") / "mn04_as_mAP_432.pt"
    sd = ref_state()
    torch.save(sd, path)
    return path, sd


def _wave(seconds=1.0, batch=2, seed=0):
    return 0.1 * torch.randn(batch, int(seconds * SR), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- front end
def test_frontend_frames_at_the_clips_own_length():
    """The values against AugmentMelSTFT itself: tests/reference/efficientat."""
    model = create_model("efficientat_mn04", input_tdim=100).eval()
    wave = _wave(1.0)  # exactly 100 frames
    feats = model.features(wave)
    assert feats.shape == (2, 100, 128) and model.clip_samples == 32000 and model.sample_rate == 32000
    short = wave[:, :20000]  # the reference's inference.py runs a file at its own length: 1 + 19999 // 320
    assert model.features(short).shape == (2, 63, 128)
    assert torch.allclose(
        model.features(short)[:, :60], feats[:, :60], atol=1e-5
    )  # the same frames where both have them
    assert model.frontend.fmax == 15000.0 and model.frontend.mask_value == pytest.approx(0.9)


def test_frontend_lengths_give_each_clip_its_own_features():
    model = create_model("efficientat_mn04", input_tdim=50).eval()
    wave = _wave(0.5)
    batch = wave.clone()
    batch[1, 7000:] = 1.0  # junk past the valid length
    lengths = torch.tensor([16000, 7000])
    feats = model.features(batch, lengths)  # the training path: a padded clip is the zero-padded clip
    assert torch.allclose(feats[1], model.features(F.pad(wave[1:, :7000], (0, 9000)))[0], atol=1e-5)
    assert torch.allclose(feats[0], model.features(wave[:1])[0], atol=1e-5)
    with torch.no_grad():  # scoring: each clip at its own length, as alone
        emb = model.embed(batch, lengths)
        alone, padded = model.embed(wave[1:, :7000])[0], model.embed(F.pad(wave[1:, :7000], (0, 9000)))[0]
        assert torch.allclose(emb[1], alone, atol=1e-5) and torch.allclose(
            emb[0], model.embed(wave[:1])[0], atol=1e-5
        )
        assert (emb[1] - padded).abs().max() > 100 * (emb[1] - alone).abs().max()


# ---------------------------------------------------------------------- the release checkpoint
@pytest.mark.parametrize("route", ["load_model", "create_model", "short_name"])
def test_release_file_loads_and_matches_the_reference(release, route, monkeypatch):
    path, sd = release
    if route == "load_model":
        model, desc = load_model(path, input_tdim=100)
        assert desc["model_name"] == "efficientat_mn04" and desc["multi_label"] is True
        assert desc["labels"] == audioset_labels() and desc["sample_rate"] == 32000
    elif route == "create_model":
        model = create_model("efficientat_mn04", pretrained=path, input_tdim=100).eval()
    else:
        seen = []
        monkeypatch.setattr(sources, "url_file", lambda url: seen.append(url) or path)
        model, desc = load_model("efficientat-mn04-as", input_tdim=100)
        assert desc["model_name"] == "efficientat_mn04"
        assert create_model("efficientat_mn04", pretrained=True, input_tdim=100).labels[0] == "Speech"
        assert seen == [effat_mod.WEIGHTS[0].sources[0]] * 2 and seen[0].endswith("/mn04_as_mAP_432.pt")
    assert model.labels == audioset_labels() and model.multi_label is True
    wave = _wave(1.0)  # every route is the same model (its numbers against the original: tests/reference)
    with torch.no_grad():
        assert torch.equal(model(wave), load_model(path)[0](wave))


def test_any_number_of_frames(release):
    path, sd = release
    model = create_model("efficientat_mn04", pretrained=path).eval()
    assert model.input_tdim == 1000 and model.clip_samples == 320000
    wave = _wave(0.37, batch=1)
    spec = model.features(wave)  # 37 frames: the CNN pools globally
    with torch.no_grad():
        got = model.forward_from_features(spec)
        assert spec.shape[1] == 37 and torch.equal(got, model(wave)) and torch.isfinite(got).all()


def test_new_classes_keep_the_hidden_layer(release):
    path, sd = release
    with pytest.warns(UserWarning, match="head.3"):
        model = create_model("efficientat_mn04", num_classes=10, pretrained=path, input_tdim=64)
    assert model.head[3].out_features == 10 and model.labels is None
    assert torch.equal(model.head[0].weight, sd["classifier.2.weight"])
    assert torch.equal(model.stem[0].weight, sd["features.0.0.weight"])


def test_width_comes_from_the_file(tmp_path):
    path = tmp_path / "mn05.pt"
    torch.save(ref_state(0.5, num_classes=3), path)
    model, desc = load_model(path, input_tdim=64)
    assert desc["model_name"] == "efficientat_mn05" and model.num_classes == 3 and model.labels is None


def test_sed_checkpoint_round_trip(release, tmp_path):
    model = create_model("efficientat_mn04", pretrained=release[0], input_tdim=64).eval()
    out = save_model(tmp_path / "m.safetensors", model)
    again, desc = load_model(out)
    wave = _wave(0.3)
    assert desc["multi_label"] is True and again.labels == model.labels
    with torch.no_grad():
        assert torch.equal(again(wave), model(wave))
    started = create_model("efficientat_mn04", pretrained=out)
    assert started.input_tdim == 64 and started.multi_label is True


# ---------------------------------------------------------------------- errors
def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_and_extra_keys_are_named(release, tmp_path):
    sd = dict(release[1])
    del sd["features.3.block.1.1.running_var"]
    sd["features.17.0.weight"] = torch.zeros(1)
    sd["bogus"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = _one_line(err)
    assert "blocks.2.block.1.1.running_var" in msg and "features.17.0.weight" in msg and "bogus" in msg


def test_another_family_is_refused(tmp_path):
    other = {
        "cfg": {},
        "model": {"patch_embedding.weight": torch.zeros(4, 1, 16, 16), "encoder.layers.0.w": torch.zeros(2)},
    }
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is a BEATs checkpoint, not an EfficientAT one"):
        create_model("efficientat_mn10", pretrained=tmp_path / "other.pt")
    unknown = {"module.x.cls_token": torch.zeros(1, 1, 8), "module.mlp_head.1.bias": torch.zeros(3)}
    with pytest.raises(CheckpointError) as err:
        create_model("efficientat_mn10", pretrained=unknown)
    assert "not an EfficientAT checkpoint" in _one_line(err) and "module.x.cls_token" in str(err.value)


def test_wrong_width_for_the_size_is_refused(release):
    with pytest.raises(CheckpointError, match="shape mismatch"):
        create_model("efficientat_mn10", pretrained=release[0])


def test_offline_short_name_is_one_line(tmp_path, monkeypatch):
    def offline(url, dst, *a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError) as err:
        load_model("efficientat-mn10-as")
    msg = _one_line(err)
    assert "efficientat-mn10-as" in msg and "could not be downloaded" in msg and "mn10_as_mAP_471.pt" in msg


# ---------------------------------------------------------------------- registry, export
@pytest.mark.parametrize("name", list_models("efficientat_*"))
def test_registered_sizes_give_batch_by_classes(name):
    assert len(list_models("efficientat_*")) == 6
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, input_tdim=64).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 8000) * 0.1)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    width = float(name[-2:]) / 10
    assert model.embed_dim == 6 * divisible(160 * width)
    if name == "efficientat_mn04":
        assert create_model(name, **model.sed_kwargs()).sed_kwargs() == model.sed_kwargs()


def test_parameter_counts():
    counts = {
        n: sum(p.numel() for p in create_model(n).parameters())
        for n in ("efficientat_mn04", "efficientat_mn10")
    }
    assert counts == {
        "efficientat_mn04": 983_599,
        "efficientat_mn10": 4_876_831,
    }  # the reference's, 527 classes


def test_onnx_export_matches_pytorch(release, tmp_path):
    pytest.importorskip("onnxruntime")
    from sed.export.onnx import export_onnx

    model = create_model("efficientat_mn04", pretrained=release[0], input_tdim=64).eval()
    report = export_onnx(model, tmp_path / "m.onnx")
    assert report["max_abs_diff"] < 1e-4
    import onnxruntime as ort

    session = ort.InferenceSession(str(report["path"]), providers=["CPUExecutionProvider"])
    for n in (5000, 64 * HOP, 30000):  # shorter, exactly one clip, longer (cropped)
        wave = _wave(n / SR, batch=3, seed=n)
        got = session.run(["logits"], {"waveform": wave.numpy()})[0]
        with torch.no_grad():
            assert math.isclose(float(abs(got - model(wave).numpy()).max()), 0.0, abs_tol=1e-4)


def test_fine_tuning_keeps_the_loaded_batchnorm_statistics_without_counters(release, tmp_path):
    """A release without ``num_batches_tracked`` (PyTorch leaves the counter at 0) fine-tunes as one with
    them: the first training batch moves the loaded statistics by the reference's momentum 0.01, it does not
    replace them (the fresh-weights warm start of sed.models.norm ends when weights are loaded)."""
    path, sd = release
    bare = tmp_path / "mn04_as_mAP_432.pt"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, bare)
    wave = _wave(1.0, batch=4, seed=3)
    stats = []
    for source in (path, bare):
        model = create_model("efficientat_mn04", pretrained=source, input_tdim=100).train()
        with torch.no_grad():
            model(wave)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert all(m.momentum == 0.01 for m in bns)
        stats.append(torch.cat([m.running_mean for m in bns]))
    assert torch.allclose(stats[0], stats[1], atol=1e-6)
