"""CED: front end, the released key layouts (original .pt, Hugging Face directory), short names, errors,
chunking of long inputs, Patch-Mix and ONNX, on random weights at CED-Tiny width with 2 blocks.

The reference checkpoints are built here from the module names of RicherMans/CED
``models/audiotransformer.py`` (``AudioTransformer``, commit 60a0f54214ea619265e16ee257925158be2675fd) and of
jimbozhang/hf_transformers_custom_model_ced ``ced_model/modeling_ced.py`` (``CedForAudioClassification``,
commit 1a9cd46bfc2b85e5fb756b9d55cb0974d582235b). The numbers against those repositories' own code, run
here, are in tests/reference/ced and tests/reference/ced_hf.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import torchaudio
from safetensors.torch import save_file

import sed.models.pretrained.ced as ced_pre
from sed.checkpoint import save_model
from sed.data.corpora.audioset import audioset_labels
from sed.errors import CheckpointError
from sed.models import ced as ced_mod
from sed.models.family import find_weights
from sed.models.loading import load_model
from sed.models.pretrained import sources
from sed.models.pretrained.build import claimed_by
from sed.models.registry import create_model

D, HEADS, DEPTH, T0 = 192, 3, 2, 1012 // 16  # CED-Tiny width, two blocks, the released 1012-frame grid


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def mel_db(wave: torch.Tensor) -> torch.Tensor:
    """The reference front end on one clip ``[1, T]`` -> ``[1, 64, frames]``."""
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000,
        n_fft=512,
        win_length=512,
        hop_length=160,
        f_min=0,
        f_max=8000,
        n_mels=64,
        center=True,
    )
    return torchaudio.transforms.AmplitudeToDB(top_db=120)(mel(wave))


def reference_state(num_classes: int = 527, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ``AudioTransformer`` weights in the original release's key layout."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, std=0.02: torch.randn(*s, generator=g) * std  # noqa: E731
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=512, win_length=512, hop_length=160, f_min=0, f_max=8000, n_mels=64
    )
    sd = {
        "front_end.0.spectrogram.window": mel.spectrogram.window.clone(),
        "front_end.0.mel_scale.fb": mel.mel_scale.fb.clone(),
        "init_bn.1.weight": 1 + r(64, std=0.1),
        "init_bn.1.bias": r(64, std=0.1),
        "init_bn.1.running_mean": -40 + r(64, std=5.0),
        "init_bn.1.running_var": 300 + r(64, std=20.0).abs(),
        "init_bn.1.num_batches_tracked": torch.tensor(1000),
        "patch_embed.proj.weight": r(D, 1, 16, 16, std=0.05),
        "patch_embed.proj.bias": r(D),
        "time_pos_embed": r(1, D, 1, T0),
        "freq_pos_embed": r(1, D, 4, 1),
    }
    for i in range(DEPTH):
        p = f"blocks.{i}."
        for n in ("norm1", "norm2"):
            sd[p + n + ".weight"], sd[p + n + ".bias"] = 1 + r(D, std=0.1), r(D)
        sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] = r(3 * D, D, std=0.1), r(3 * D)
        sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = r(D, D, std=0.1), r(D)
        sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = r(4 * D, D, std=0.1), r(4 * D)
        sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = r(D, 4 * D, std=0.1), r(D)
    sd.update(
        {
            "norm.weight": 1 + r(D, std=0.1),
            "norm.bias": r(D),
            "outputlayer.0.weight": 1 + r(D, std=0.1),
            "outputlayer.0.bias": r(D),
            "outputlayer.1.weight": r(num_classes, D, std=0.3),
            "outputlayer.1.bias": r(num_classes),
        }
    )
    return sd


def hf_state(sd: dict) -> dict:
    """The same weights in the Hugging Face port's layout (``encoder.*``, BatchNorm2d ``init_bn``, no front
    end)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("front_end."):
            continue
        out[k if k.startswith("outputlayer.") else "encoder." + k.replace("init_bn.1.", "init_bn.")] = (
            v.contiguous()
        )
    return out


def waves(n: int, seconds: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, int(16000 * seconds), generator=g)


@pytest.fixture(scope="module")
def ref_sd():
    return reference_state()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, ref_sd):
    root = tmp_path_factory.mktemp("ced-tiny-hf")
    save_file(hf_state(ref_sd), str(root / "model.safetensors"))
    id2label = {
        str(i): name.split(",")[0] for i, name in enumerate(audioset_labels())
    }  # as the port writes them
    cfg = {
        "architectures": ["CedForAudioClassification"],
        "model_type": "ced",
        "name": "ced-tiny",
        "embed_dim": D,
        "depth": DEPTH,
        "num_heads": HEADS,
        "mlp_ratio": 4.0,
        "target_length": 1012,
        "n_mels": 64,
        "patch_size": 16,
        "patch_stride": 16,
        "pooling": "mean",
        "outputdim": 527,
        "qkv_bias": True,
        "id2label": id2label,
    }
    (root / "config.json").write_text(json.dumps(cfg))
    return root


# ---------------------------------------------------------------------- front end
def test_frontend_equals_torchaudio_melspectrogram_db():
    x = waves(3, 1.3)
    x[1] *= 30  # loud: the 120 dB floor matters
    x[2, 8000:] = 0  # digital silence: the floor does too
    fe = ced_mod.CEDMel(target_length=None)
    got = fe(x)
    want = torch.cat([mel_db(c[None]).transpose(1, 2) for c in x])
    assert got.shape == want.shape == (3, 1 + x.shape[1] // 160, 64)
    assert (got - want).abs().max() < 1e-4
    fixed = ced_mod.CEDMel(target_length=101)  # 1 s: shorter clips are zero-padded audio, longer ones cut
    assert fixed.clip_samples == 16000
    assert (
        fixed(x[:, :12000])
        - torch.cat([mel_db(F.pad(c, (0, 4000))[None]).transpose(1, 2) for c in x[:, :12000]])
    ).abs().max() < 1e-4
    assert (fixed(x) - torch.cat([mel_db(c[:16000][None]).transpose(1, 2) for c in x])).abs().max() < 1e-4
    lengths = torch.tensor([12000, 16000, 16000])
    assert torch.equal(fixed(x[:, :16000], lengths)[0], fixed(x[:1, :12000])[0])


# ---------------------------------------------------------------------- the released layouts
def test_original_release_pt_gives_the_reference_scores(tmp_path, ref_sd):
    path = tmp_path / "audiotransformer_tiny_mAP_4814.pt"
    torch.save({"model": ref_sd}, path)
    model, desc = load_model(path, input_tdim=101)
    assert model.labels == audioset_labels() and desc["multi_label"] is True
    assert desc["model_name"] == "ced_tiny" and model.embed_dim == D and len(model.blocks) == DEPTH
    assert model.time_pos_embed.shape[-1] == T0 and model.grid == (
        4,
        6,
    )  # 1 s uses the first 6 time positions


def test_hugging_face_directory_and_short_name(monkeypatch, hf_dir, ref_sd, tmp_path):
    model = create_model("ced_tiny", pretrained=str(hf_dir), input_tdim=151).eval()
    torch.save(ref_sd, tmp_path / "original.pt")
    original = create_model("ced_tiny", pretrained=str(tmp_path / "original.pt")).eval()
    wave = waves(2, 1.5, seed=3)
    with (
        torch.no_grad()
    ):  # one chunk: the two layouts of the same weights score alike (numbers: tests/reference)
        assert torch.allclose(model(wave), original(wave), atol=1e-5)
    assert (
        model.labels[1] == "Male speech, man speaking" and model.multi_label
    )  # full names, not the port's cut ones
    calls = []
    monkeypatch.setattr(sources, "hub_snapshot", lambda repo: calls.append(repo) or str(hf_dir))
    by_name, _ = load_model("ced-tiny", input_tdim=151)
    with pytest.warns(UserWarning, match="re-initialised the classifier head"):
        default = create_model("ced_tiny", pretrained=True, input_tdim=151, num_classes=5)
    assert calls == ["mispeech/ced-tiny", "mispeech/ced-tiny"] and default.head[1].out_features == 5
    with torch.no_grad():
        assert torch.equal(by_name(wave), model(wave))
    assert find_weights("ced-base")[0].name == "ced" and claimed_by(sources.resolve(hf_dir)) == "ced"
    assert model.chunk_average == "embedding"  # the port pools the tokens of all chunks, then one head


def test_offline_short_name_is_one_line(monkeypatch):
    import huggingface_hub

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match=r"^ced-mini: could not be downloaded") as err:
        load_model("ced-mini")
    assert "\n" not in str(err.value)


def test_long_inputs_are_chunked_and_averaged(tmp_path, ref_sd):
    path = tmp_path / "ced.pt"
    torch.save(ref_sd, path)
    wave = waves(2, 23.0, seed=5)  # 2301 frames: chunks of 1012, 1012 and 277 zero-padded frames
    got = {}
    for average in ("prob", "embedding"):
        model, _ = load_model(path, chunk_average=average)
        with torch.no_grad():
            got[average] = torch.sigmoid(model(wave))
            assert model.embed(wave).shape == (2, D)
            first = torch.sigmoid(model(wave[:, : 1011 * 160]))  # the first chunk alone
        assert not torch.allclose(got[average], first, atol=1e-3)  # the later chunks count
    assert not torch.allclose(
        got["prob"], got["embedding"], atol=1e-4
    )  # (numbers of both: tests/reference/ced*)
    big = torch.tensor(
        [[30.0, -30.0], [30.0, 30.0]]
    )  # logit(mean sigmoid) stays finite where sigmoid saturates
    out = torch.logsumexp(F.logsigmoid(big), 0) - torch.logsumexp(F.logsigmoid(-big), 0)
    assert torch.isfinite(out).all() and abs(float(out[0]) - 30.0) < 1e-4 and abs(float(out[1])) < 1e-4


def test_other_target_length_adapts_positions(tmp_path, ref_sd):
    path = tmp_path / "ced.pt"
    torch.save(ref_sd, path)
    short, _ = load_model(path, target_length=512, input_tdim=301)
    assert torch.equal(short.time_pos_embed, ref_sd["time_pos_embed"][..., :32])
    long, _ = load_model(path, target_length=2048, input_tdim=301)
    want = F.interpolate(ref_sd["time_pos_embed"], size=(1, 128), mode="bilinear", align_corners=False)
    assert torch.allclose(long.time_pos_embed, want)


# ---------------------------------------------------------------------- errors
def test_missing_extra_and_foreign_keys_are_named(tmp_path, monkeypatch, ref_sd, hf_dir):
    sd = dict(ref_sd)
    del sd["blocks.1.mlp.fc2.weight"]
    torch.save(sd, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks\.1\.mlp\.fc2\.weight'\]"):
        load_model(tmp_path / "missing.pt")
    torch.save(
        {**ref_sd, "blocks.0.attn.rel_bias": torch.zeros(3), "outputlayer.2.weight": torch.zeros(1)},
        tmp_path / "extra.pt",
    )
    with pytest.raises(
        CheckpointError, match=r"unexpected keys \['blocks\.0\.attn\.rel_bias', 'outputlayer\.2\.weight'\]"
    ):
        create_model("ced_tiny", pretrained=str(tmp_path / "extra.pt"))
    hf = hf_state(ref_sd)
    del hf["encoder.norm.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \['encoder\.norm\.bias'\]"):
        ced_pre.IMPORTER.build(hf)
    torch.save(
        {"module.v.pos_embed": torch.zeros(1, 3, 4), "module.v.cls_token": torch.zeros(1, 1, 4)},
        tmp_path / "ast.pth",
    )
    with pytest.raises(CheckpointError, match=r"ast\.pth: is an AST checkpoint, not a CED one"):
        create_model("ced_tiny", pretrained=str(tmp_path / "ast.pth"))
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: is not a CED checkpoint.*other\.weight"):
        create_model("ced_tiny", pretrained=str(tmp_path / "other.pt"))
    beats = {
        "cfg": {},
        "model": {"patch_embedding.weight": torch.zeros(2), "encoder.layers.0.x": torch.zeros(2)},
    }
    torch.save(beats, tmp_path / "beats.pt")
    with pytest.raises(CheckpointError, match=r"beats\.pt: is a BEATs checkpoint, not a CED one"):
        create_model("ced_tiny", pretrained=str(tmp_path / "beats.pt"))


# ---------------------------------------------------------------------- sed interface
@pytest.mark.parametrize("name", sorted(ced_mod.CED_SIZES))
def test_registered_sizes_give_batch_by_classes(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, input_tdim=64).eval()
    assert (model.embed_dim, model.blocks[0].attn.num_heads) == tuple(
        ced_mod.CED_SIZES[name][k] for k in ("embed_dim", "num_heads")
    )
    with torch.no_grad():
        out = model(torch.randn(2, 8000) * 0.1)
    assert out.shape == (2, 4) and torch.isfinite(out).all()


def test_sed_checkpoint_round_trip(tmp_path, ref_sd):
    model = ced_pre.IMPORTER.build(ref_sd, input_tdim=101).eval()
    path = save_model(tmp_path / "m.safetensors", model)
    again, desc = load_model(path)
    wave = waves(1, 0.8)
    with torch.no_grad():
        assert torch.equal(again(wave), model(wave))
    assert desc["multi_label"] and again.labels == model.labels and desc["frontend"]["kind"] == "ced_mel"
    rebuilt = create_model("ced_tiny", pretrained=str(path))
    assert rebuilt.input_tdim == 101 and rebuilt.labels == model.labels


@pytest.mark.filterwarnings("ignore:You are trying to:UserWarning")
def test_patchmix_task_trains_a_step():
    from sed.tasks.patchmix import PatchMixTask

    torch.manual_seed(0)
    task = PatchMixTask(
        method="patchmix_cl",
        model_name="ced_tiny",
        model_kwargs={"input_tdim": 64, "depth": 2},
        num_classes=3,
        lr=1e-3,
    )
    model = task.model
    feats = model.features(torch.randn(4, model.clip_samples) * 0.1)
    logits, pooled, y_a, y_b, lam, index = model.forward_patch_mix(
        feats, torch.tensor([0, 1, 2, 0]), 1.0, torch.Generator().manual_seed(1)
    )
    assert logits.shape == (4, 3) and pooled.shape == (4, D) and 0 <= lam <= 1 and model.grid == (4, 4)
    batch = {"wave": torch.randn(4, 12000) * 0.1, "label": torch.tensor([0, 1, 2, 1])}
    opt = torch.optim.Adam(task.parameters(), 1e-3)
    before = model.patch_embed.weight.detach().clone()
    loss, logits = task.training_loss(batch)
    loss.backward()
    opt.step()
    assert (
        torch.isfinite(loss) and logits.shape == (4, 3) and not torch.equal(before, model.patch_embed.weight)
    )


def test_onnx_export_matches_pytorch(tmp_path, ref_sd):
    pytest.importorskip("onnxruntime")
    from sed.export.onnx import export_onnx, max_logit_diff

    model = ced_pre.IMPORTER.build(ref_sd, input_tdim=101).eval()
    report = export_onnx(model, tmp_path / "m.onnx")
    assert report["max_abs_diff"] < 1e-4
    assert max_logit_diff(report["path"], model, waves(3, 0.7, seed=9)) < 1e-4  # each clip at its own length
    assert max_logit_diff(report["path"], model, waves(1, 1.4, seed=9)) < 1e-4
    assert report["description"]["max_samples"] == 1012 * 160 - 1  # the graph holds one chunk
    from sed.inference.runtime import OnnxModel

    with pytest.raises(
        CheckpointError, match=r"m\.onnx: the graph takes at most 161919 samples \(10\.12 s\)"
    ) as err:
        OnnxModel(report["path"])(waves(1, 12.0))
    assert "\n" not in str(err.value)
