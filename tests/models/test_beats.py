"""BEATs: front end, the release ``.pt`` layout, loading routes and errors, Patch-Mix, export.

The numbers against the original code (microsoft/unilm ``beats/``, run here) are in tests/reference/beats;
these tests cover what the importer and the model do around them, on a release-layout file whose key names
follow the original (``post_extract_proj``, ``patch_embedding``, ``encoder.pos_conv.0.weight_g/_v``, the
shared relative bias under every layer, ``predictor``, ``cfg`` and ``label_dict`` ``{row: mid}``).
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from torchaudio.compliance import kaldi

from sed.data.corpora.audioset import audioset_mids
from sed.errors import CheckpointError
from sed.models import beats as beats_module  # noqa: F401 - registers the sizes
from sed.models.beats import WEIGHTS, BEATsFbank
from sed.models.pretrained import sources
from sed.models.registry import create_model

torch.set_num_threads(1)
MICRO_CFG = {
    "input_patch_size": 16,
    "embed_dim": 32,
    "conv_bias": False,
    "encoder_layers": 2,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 2,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": True,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
    "finetuned_model": True,
    "predictor_dropout": 0.0,
    "predictor_class": 527,
}


# --------------------------------------------------------------- the release file, written from the reference
def release_state(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.05, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    e, d, f = cfg["embed_dim"], cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"]
    h, k, p = cfg["encoder_attention_heads"], cfg["conv_pos"], cfg["input_patch_size"]
    sd = {
        "post_extract_proj.weight": r(d, e, std=0.2),
        "post_extract_proj.bias": r(d),
        "patch_embedding.weight": r(e, 1, p, p, std=0.1),
        "encoder.pos_conv.0.bias": r(d),
        "encoder.pos_conv.0.weight_g": r(1, 1, k, std=0.3, mean=1.0),
        "encoder.pos_conv.0.weight_v": r(d, d // cfg["conv_pos_groups"], k, std=0.1),
    }
    bias = r(cfg["num_buckets"], h, std=1.0)
    for i in range(cfg["encoder_layers"]):
        a = f"encoder.layers.{i}.self_attn."
        sd[a + "grep_a"] = r(1, h, 1, 1, std=0.3, mean=1.0)
        sd[a + "relative_attention_bias.weight"] = bias  # one module shared by every layer
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            sd[a + name + ".weight"], sd[a + name + ".bias"] = r(d, d, std=0.15), r(d)
        sd[a + "grep_linear.weight"], sd[a + "grep_linear.bias"] = r(8, d // h, std=0.3), r(8)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            sd[f"encoder.layers.{i}.{ln}.weight"] = r(d, std=0.1, mean=1.0)
            sd[f"encoder.layers.{i}.{ln}.bias"] = r(d)
        sd[f"encoder.layers.{i}.fc1.weight"], sd[f"encoder.layers.{i}.fc1.bias"] = r(f, d, std=0.1), r(f)
        sd[f"encoder.layers.{i}.fc2.weight"], sd[f"encoder.layers.{i}.fc2.bias"] = r(d, f, std=0.1), r(d)
    sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"] = r(d, std=0.1, mean=1.0), r(d)
    sd["layer_norm.weight"], sd["layer_norm.bias"] = r(e, std=0.1, mean=1.0), r(e)
    if cfg["finetuned_model"]:
        sd["predictor.weight"], sd["predictor.bias"] = (
            r(cfg["predictor_class"], d, std=0.1),
            r(cfg["predictor_class"]),
        )
    return sd


def label_dict(n=527, seed=0) -> dict[int, str]:
    """The release form ``{predictor row: AudioSet mid}`` (the BEATs README:
    ``label_dict[label_idx.item()]``)."""
    rows = list(range(n))
    random.Random(seed).shuffle(rows)  # the release's own row order, not the ontology's
    return {row: mid for mid, row in zip(audioset_mids(), rows)}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    path = tmp_path_factory.mktemp("beats") / "BEATs_micro_finetuned.pt"
    torch.save({"cfg": dict(MICRO_CFG), "model": release_state(MICRO_CFG), "label_dict": label_dict()}, path)
    return path


def clip(frames: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return 0.1 * torch.randn(batch, (frames - 1) * 160 + 400, generator=torch.Generator().manual_seed(seed))


def ontology_order() -> list[int]:
    by_mid = {mid: row for row, mid in label_dict().items()}
    return [by_mid[m] for m in audioset_mids()]


# ---------------------------------------------------------------------- tests
def test_front_end_is_kaldi_fbank_of_the_scaled_wave():
    wave = clip(101, 3)
    ref = torch.stack(
        [
            kaldi.fbank(
                w[None] * 2**15, num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10
            )
            for w in wave
        ]
    )
    raw = BEATsFbank(target_length=None)
    assert (raw.fbank(wave) - ref).abs().max() < 1e-4
    assert (raw(wave) - (ref - 15.41663) / (2 * 6.55582)).abs().max() < 1e-4
    padded = BEATsFbank(target_length=120)(wave)
    assert padded.shape == (3, 120, 128) and torch.equal(padded[:, :101], raw(wave))


@pytest.mark.parametrize("how", ["pretrained", "short_name"])
def test_release_file_loads_by_every_route(release, how, monkeypatch):
    """Numbers against the original code: tests/reference/beats. Here: every route gives the same model."""
    from sed.models.loading import load_model

    base, desc = load_model(release)
    assert desc["multi_label"] and desc["labels"][0] == "Speech" and desc["max_samples"] == 30 * 16000
    if how == "pretrained":
        model = create_model("beats_micro", pretrained=str(release)).eval()
    else:
        seen = []
        monkeypatch.setattr(
            sources, "hub_file", lambda repo, name: seen.append(f"hf://{repo}/{name}") or str(release)
        )
        model = create_model("beats_iter3", pretrained=True).eval()
        assert seen == [WEIGHTS[0].sources[0]] and WEIGHTS[0].name == "beats-iter3-plus-as2m"
    assert model.multi_label and len(model.labels) == 527 and model.labels[0] == "Speech"
    assert model.sed_config["kwargs"]["embed_dim"] == 64
    wave = clip(64)
    with torch.no_grad():
        assert torch.equal(model(wave), base(wave))


def test_predictor_rows_follow_the_label_dict(release):
    from sed.models.loading import load_model

    model, _ = load_model(release)
    rows = release_state(MICRO_CFG)["predictor.weight"]
    assert torch.equal(
        model.head[1].weight, rows[ontology_order()]
    )  # output j = the row whose mid is class j


def test_pretrained_only_file_gets_a_new_head(tmp_path, release):
    from sed.models.loading import load_model

    cfg = {**MICRO_CFG, "finetuned_model": False}
    path = tmp_path / "BEATs_micro.pt"
    torch.save({"cfg": cfg, "model": release_state(cfg)}, path)
    with pytest.warns(UserWarning, match="re-initialised the classifier head"):
        model = create_model("beats_micro", num_classes=3, pretrained=str(path)).eval()
    assert model.num_classes == 3 and model.labels is None and not model.multi_label
    wave = clip(48)
    with torch.no_grad():  # the same encoder as the fine-tuned release (same seed): the same embedding
        assert torch.allclose(model.embed(wave), load_model(release)[0].embed(wave), atol=1e-6)


def test_saved_import_round_trips(release, tmp_path):
    from sed import save_model
    from sed.models.loading import load_model

    model = create_model("beats_micro", pretrained=str(release), input_tdim=32).eval()
    save_model(tmp_path / "m.pt", model)
    again, desc = load_model(tmp_path / "m.pt")
    wave = clip(32)
    with torch.no_grad():
        assert torch.equal(model(wave), again(wave))
    assert desc["multi_label"] and desc["labels"] == model.labels


def _write(tmp_path, name, state, cfg=MICRO_CFG):
    path = tmp_path / name
    torch.save({"cfg": dict(cfg), "model": state, "label_dict": label_dict()}, path)
    return str(path)


def test_missing_extra_and_wrong_family_are_one_line_errors(tmp_path):
    sd = release_state(MICRO_CFG)
    missing = {k: v for k, v in sd.items() if k != "encoder.layers.1.fc2.weight"}
    with pytest.raises(CheckpointError, match=r"missing keys \['encoder.layers.1.fc2.weight'\]") as err:
        create_model("beats_micro", pretrained=_write(tmp_path, "missing.pt", missing))
    assert "\n" not in str(err.value)
    extra = {**sd, "encoder.layers.0.self_attn.bias_k": torch.zeros(1, 1, 64)}
    with pytest.raises(CheckpointError, match=r"unexpected keys \['encoder.layers.0.self_attn.bias_k'\]"):
        create_model("beats_micro", pretrained=_write(tmp_path, "extra.pt", extra))
    ast = tmp_path / "ast.pth"
    torch.save(create_model("ast_micro", input_tdim=32).state_dict(), ast)
    with pytest.raises(CheckpointError, match="is an AST checkpoint, not a BEATs one"):
        create_model("beats_micro", pretrained=str(ast))
    with pytest.raises(CheckpointError, match="is not a BEATs release file"):
        create_model("beats_micro", pretrained={"cfg": {}, "weight": torch.zeros(2)})
    other = tmp_path / "ced.pt"
    torch.save(create_model("ced_tiny", depth=1).state_dict(), other)
    with pytest.raises(CheckpointError, match="is a CED checkpoint, not a BEATs one"):
        create_model("beats_iter3", pretrained=str(other))
    inverse = tmp_path / "inverse.pt"  # {mid: row}: no public release has it
    torch.save(
        {"cfg": dict(MICRO_CFG), "model": sd, "label_dict": {m: r for r, m in label_dict().items()}}, inverse
    )
    with pytest.raises(CheckpointError, match=r"label_dict is not \{predictor row: AudioSet mid\}"):
        create_model("beats_micro", pretrained=str(inverse))
    with pytest.raises(CheckpointError, match="layer_norm_first"):
        create_model(
            "beats_micro",
            pretrained=_write(tmp_path, "preln.pt", sd, {**MICRO_CFG, "layer_norm_first": True}),
        )


def test_offline_short_name_is_one_line(monkeypatch):
    def offline(repo, name):
        raise OSError("We have no connection\nto the hub")

    monkeypatch.setattr(sources, "hub_file", offline)
    with pytest.raises(CheckpointError, match="beats-iter3-plus-as2m-pt: could not be downloaded") as err:
        create_model("beats_iter3", pretrained="beats-iter3-plus-as2m-pt")
    assert "\n" not in str(err.value) and "pass its path" in str(err.value)


@pytest.mark.parametrize("name", ["beats_iter3", "beats_micro"])
def test_registered_sizes_give_batch_by_classes(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, input_tdim=64).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 8000) * 0.1)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    rebuilt = create_model(name, **model.sed_config["kwargs"])
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    if name == "beats_iter3":
        assert 90e6 < sum(p.numel() for p in model.parameters()) < 91e6 and len(model.blocks) == 12


def test_patch_mix_forward_and_task_step():
    from sed.tasks.patchmix import PatchMixTask

    torch.manual_seed(0)
    model = create_model("beats_micro", num_classes=3, input_tdim=64).eval()
    feats = model.features(clip(64, 4))
    y = torch.tensor([0, 1, 2, 1])
    logits, pooled, y_a, y_b, lam, index = model.forward_patch_mix(
        feats, y, beta=0.0
    )  # lam = 1: nothing swapped
    assert lam == 1.0 and torch.allclose(logits, model.forward_from_features(feats), atol=1e-6)
    assert model.grid == (8, 4) and pooled.shape == (4, 64)
    _, _, _, _, lam, _ = model.forward_patch_mix(feats, y, beta=1.0, time_domain=True)
    assert lam in {1 - i / 4 for i in range(5)}  # whole time columns of the (f, t) grid
    task = PatchMixTask(
        method="patchmix_cl",
        model_name="beats_micro",
        model_kwargs={"input_tdim": 64},
        num_classes=3,
        lr=1e-3,
    )
    batch = {"wave": clip(64, 4), "label": y}
    loss, out = task.training_loss(batch)
    loss.backward()
    assert out.shape == (4, 3) and torch.isfinite(loss)
    assert task.model.blocks[0].self_attn.grep_a.grad is not None


def test_onnx_export_matches_pytorch(release, tmp_path):
    pytest.importorskip("onnxruntime")
    from sed.export.onnx import export_onnx

    model = create_model("beats_micro", pretrained=str(release), input_tdim=32).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export_onnx(model, tmp_path / "m.onnx")
    assert report["max_abs_diff"] < 1e-4
    from sed.inference.runtime import OnnxModel

    graph = OnnxModel(report["path"])  # each clip at its own length; shorter than a patch: zero-padded to one
    assert graph.input_samples == (model.patch_samples, 3600 * 16000) and model.patch_samples == 2800
    assert graph.max_samples == 30 * 16000
    batch = torch.zeros(3, 8000)
    batch[0], batch[1, :1000], batch[2, :4321] = (
        clip(60, 1)[0, :8000],
        clip(8, 1)[0, :1000],
        clip(30, 1)[0, :4321],
    )
    lengths = torch.tensor([8000, 1000, 4321])
    with torch.no_grad():
        want = model(batch, lengths)
        assert torch.allclose(graph(batch, lengths), want, atol=1e-4)
        assert torch.allclose(want[1], model(batch[1:2, :1000])[0], atol=1e-5)
