"""AST model and every pretrained format (spec ast-patchmix-icbhi.md §1.2, §1.4), on tiny CPU configs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import Block

from sed.errors import CheckpointError
from sed.models import create_model
from sed.models.ast import ASTModel, adapt_pos_embed
from sed.models.pretrained.ast import build_ast_from_pretrained

transformers = pytest.importorskip("transformers")

N_LABELS = 5


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere (LayerNorm scales around 1) so that no tensor is a no-op."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def _micro(**kw) -> ASTModel:
    model = create_model("ast_micro", **{"num_classes": N_LABELS, "input_tdim": 128, **kw}).eval()
    _randomise(model)
    return model


def _original_layout(model: ASTModel) -> dict:
    """An ASTModel's weights as the original AST writes them (DataParallel, v., DeiT heads, mlp_head)."""
    d = model.embed_dim
    sd = {f"module.v.{k}": v for k, v in model.state_dict().items() if not k.startswith("head.")}
    sd["module.v.head.weight"], sd["module.v.head.bias"] = torch.randn(1000, d), torch.randn(1000)
    sd["module.v.head_dist.weight"], sd["module.v.head_dist.bias"] = torch.randn(1000, d), torch.randn(1000)
    for k, v in model.head.state_dict().items():
        sd[f"module.mlp_head.{k}"] = v
    return sd


def _hf_to_original(sd: dict, d: int) -> dict:
    """Inverse of the HF conversion script's mapping (spec §1.4 table), written out independently."""
    out = {}
    p = "audio_spectrogram_transformer."
    emb = {
        "cls_token": "cls_token",
        "distillation_token": "dist_token",
        "position_embeddings": "pos_embed",
        "patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "patch_embeddings.projection.bias": "patch_embed.proj.bias",
    }
    for k, v in emb.items():
        out[f"module.v.{v}"] = sd[f"{p}embeddings.{k}"]
    i = 0
    while f"{p}encoder.layer.{i}.layernorm_before.weight" in sd:
        a, b = f"{p}encoder.layer.{i}.", f"module.v.blocks.{i}."
        for wb in ("weight", "bias"):
            out[b + f"norm1.{wb}"] = sd[a + f"layernorm_before.{wb}"]
            out[b + f"norm2.{wb}"] = sd[a + f"layernorm_after.{wb}"]
            out[b + f"attn.qkv.{wb}"] = torch.cat(
                [sd[a + f"attention.attention.{n}.{wb}"] for n in ("query", "key", "value")]
            )
            out[b + f"attn.proj.{wb}"] = sd[a + f"attention.output.dense.{wb}"]
            out[b + f"mlp.fc1.{wb}"] = sd[a + f"intermediate.dense.{wb}"]
            out[b + f"mlp.fc2.{wb}"] = sd[a + f"output.dense.{wb}"]
        i += 1
    for wb in ("weight", "bias"):
        out[f"module.v.norm.{wb}"] = sd[f"{p}layernorm.{wb}"]
        out[f"module.mlp_head.0.{wb}"] = sd[f"classifier.layernorm.{wb}"]
        out[f"module.mlp_head.1.{wb}"] = sd[f"classifier.dense.{wb}"]
    out["module.v.head.weight"], out["module.v.head.bias"] = torch.zeros(1000, d), torch.zeros(1000)
    return out


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A random 2-layer HF AST saved by transformers (v4 names on disk), 128 frames, 5 labels."""
    cfg = transformers.ASTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_length=128,
        num_labels=N_LABELS,
        id2label={i: f"class{i}" for i in range(N_LABELS)},
        label2id={f"class{i}": i for i in range(N_LABELS)},
    )
    model = transformers.ASTForAudioClassification(cfg).eval()
    _randomise(model)
    path = tmp_path_factory.mktemp("hf_ast")
    model.save_pretrained(path)
    extractor = transformers.ASTFeatureExtractor(max_length=128, mean=-5.5, std=4.0)
    extractor.save_pretrained(path)
    rng = np.random.default_rng(0)
    waves = [
        0.1 * rng.standard_normal(24000).astype(np.float32),
        0.1 * rng.standard_normal(9000).astype(np.float32),
    ]
    with torch.no_grad():
        logits = model(**extractor(waves, sampling_rate=16000, return_tensors="pt")).logits
    batch = torch.zeros(2, 24000)
    batch[0], batch[1, :9000] = torch.from_numpy(waves[0]), torch.from_numpy(waves[1])
    return {
        "model": model,
        "path": path,
        "logits": logits,
        "wave": batch,
        "lengths": torch.tensor([24000, 9000]),
    }


def _write_hf_dir(hf, tmp_path, layout: str):
    if layout == "saved":  # transformers 5.24 save_pretrained: v4 names, safetensors
        return hf["path"]
    tmp_path.joinpath("config.json").write_text(hf["path"].joinpath("config.json").read_text())
    sd = {k: v.clone() for k, v in hf["model"].state_dict().items()}  # in-memory 5.x names
    assert "audio_spectrogram_transformer.layers.0.attention.q_proj.weight" in sd
    torch.save(sd, tmp_path / "pytorch_model.bin")
    return tmp_path


@pytest.mark.parametrize("layout", ["saved", "v5_bin"])
def test_hf_checkpoint_matches_transformers(hf, tmp_path, layout):
    path = _write_hf_dir(hf, tmp_path, layout)
    model = build_ast_from_pretrained(path).eval()
    assert model.labels == [f"class{i}" for i in range(N_LABELS)]
    assert model.blocks[0].norm1.eps == 1e-12 and model.norm.eps == 1e-12 and model.head[0].eps == 1e-12
    if layout == "saved":
        assert (model.frontend.mean, model.frontend.std) == (-5.5, 4.0)  # from preprocessor_config.json
    with torch.no_grad():
        out = model(hf["wave"], hf["lengths"])
    if layout == "saved":
        torch.testing.assert_close(out, hf["logits"], atol=1e-4, rtol=0)
    else:  # no preprocessor config: AudioSet stats, so compare on the HF features themselves
        fe = transformers.ASTFeatureExtractor(max_length=128)
        feats = fe(
            [w[:n].numpy() for w, n in zip(hf["wave"], hf["lengths"])],
            sampling_rate=16000,
            return_tensors="pt",
        )["input_values"]
        with torch.no_grad():
            torch.testing.assert_close(
                model.forward_fbank(feats), hf["model"](feats).logits, atol=1e-4, rtol=0
            )


def test_hf_saved_file_has_v4_names(hf):
    keys = set(load_file(str(hf["path"] / "model.safetensors")))
    assert "audio_spectrogram_transformer.encoder.layer.1.attention.attention.value.weight" in keys


def test_original_layout_of_hf_weights_agrees(hf, tmp_path):
    """HF -> original layout (fused qkv, v.head extras, mlp_head.0/1) by the spec table, then loaded."""
    sd = _hf_to_original(load_file(str(hf["path"] / "model.safetensors")), 64)
    torch.save(sd, tmp_path / "audioset_10_10_0.4593.pth")
    with pytest.warns(UserWarning, match="head"):  # the new head is named when it is re-initialised
        build_ast_from_pretrained(tmp_path / "audioset_10_10_0.4593.pth", num_classes=3)
    model = build_ast_from_pretrained(
        tmp_path / "audioset_10_10_0.4593.pth", block_eps=1e-12, norm_eps=1e-12, head_eps=1e-12
    ).eval()
    from_hf = build_ast_from_pretrained(hf["path"])
    for k, v in from_hf.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    fe = transformers.ASTFeatureExtractor(max_length=128)
    feats = fe(
        [w[:n].numpy() for w, n in zip(hf["wave"], hf["lengths"])], sampling_rate=16000, return_tensors="pt"
    )["input_values"]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_fbank(feats), hf["model"](feats).logits, atol=1e-4, rtol=0)


def test_original_pth_round_trip_is_exact_and_keeps_original_eps(tmp_path):
    model = _micro()
    path = tmp_path / "audioset_10_10_0.4593.pth"
    torch.save(_original_layout(model), path)
    loaded = build_ast_from_pretrained(path).eval()
    assert loaded.blocks[1].norm2.eps == 1e-6 and loaded.norm.eps == 1e-6 and loaded.head[0].eps == 1e-5
    assert loaded.sed_config["name"] == "ast_micro" and loaded.grid == (12, 12)
    assert sorted(loaded.pretrained_report["dropped"])[0] == "v.head.bias"
    wave = 0.1 * torch.randn(2, 20000)
    with torch.no_grad():
        assert torch.equal(loaded(wave), model(wave))


def _fake_deit(depth: int = 1, d: int = 768) -> dict:
    """deit_base_distilled_patch16_384 shapes (24x24 grid, 3-channel patches), fewer blocks."""
    torch.manual_seed(0)
    sd = {
        "cls_token": torch.randn(1, 1, d),
        "dist_token": torch.randn(1, 1, d),
        "pos_embed": torch.randn(1, 578, d),
        "patch_embed.proj.weight": torch.randn(d, 3, 16, 16),
        "patch_embed.proj.bias": torch.randn(d),
        "norm.weight": torch.randn(d),
        "norm.bias": torch.randn(d),
        "head.weight": torch.randn(1000, d),
        "head.bias": torch.randn(1000),
        "head_dist.weight": torch.randn(1000, d),
        "head_dist.bias": torch.randn(1000),
    }
    grid = sd["pos_embed"][0, 2:].view(24, 24, d)
    grid[:, :, 0] = torch.arange(24.0)[:, None]  # channel 0 = source row (frequency)
    grid[:, :, 1] = torch.arange(24.0)[None, :]  # channel 1 = source column (time)
    for i in range(depth):
        sd.update({f"blocks.{i}.{k}": v for k, v in Block(d, 12, qkv_bias=True).state_dict().items()})
    return sd


def test_deit_adaptation_follows_the_spec(tmp_path):
    sd = _fake_deit()
    torch.save({"model": sd}, tmp_path / "deit.pth")  # the DeiT release wraps the state dict
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the DeiT head is expected to be new: no warning
        m1024 = build_ast_from_pretrained(tmp_path / "deit.pth", num_classes=4, input_tdim=1024)
    assert m1024.pos_embed.shape == (1, 1214, 768) and m1024.embed_dim == 768 and len(m1024.blocks) == 1
    assert torch.equal(m1024.patch_embed.proj.weight, sd["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert torch.equal(m1024.patch_embed.proj.bias, sd["patch_embed.proj.bias"])
    assert torch.equal(m1024.pos_embed[:, :2], sd["pos_embed"][:, :2])
    assert torch.equal(m1024.cls_token, sd["cls_token"]) and torch.equal(m1024.dist_token, sd["dist_token"])
    assert {"head.weight", "head_dist.weight"} <= set(m1024.pretrained_report["dropped"])
    # t = 101 > 24: time interpolated (bilinear, align_corners=False) first; then rows 6:18 kept
    pe = m1024.pos_embed[0, 2:].view(12, 101, 768)
    assert torch.equal(pe[:, :, 0], torch.arange(6.0, 18.0)[:, None].expand(12, 101))
    src_col = ((torch.arange(101.0) + 0.5) * 24 / 101 - 0.5).clamp(0, 23)
    torch.testing.assert_close(pe[:, :, 1], src_col.expand(12, 101), atol=1e-5, rtol=0)
    assert build_ast_from_pretrained(sd, input_tdim=798).pos_embed.shape == (1, 950, 768)
    m128 = build_ast_from_pretrained(sd, input_tdim=128)  # t = 12 <= 24: middle columns 6:18
    pe = m128.pos_embed[0, 2:].view(12, 12, 768)
    assert torch.equal(pe[:, :, 0], torch.arange(6.0, 18.0)[:, None].expand(12, 12))
    assert torch.equal(pe[:, :, 1], torch.arange(6.0, 18.0)[None, :].expand(12, 12))
    with torch.no_grad():
        assert m128(0.1 * torch.randn(1, 16000)).shape == (1, 527)


def _marked_1024(tmp_path):
    model = create_model("ast_micro", num_classes=N_LABELS, input_tdim=1024)
    with torch.no_grad():
        grid = model.pos_embed[0, 2:].view(12, 101, 64)
        grid[:, :, 0] = torch.arange(12.0)[:, None]
        grid[:, :, 1] = torch.arange(101.0)[None, :]
    path = tmp_path / "audioset_10_10_0.4593.pth"
    torch.save(_original_layout(model), path)
    return model, path


@pytest.mark.parametrize(
    "tdim, tokens, first_col", [(512, 602, 25), (798, 950, 11), (2048, 12 * 204 + 2, None)]
)
def test_1024_frame_checkpoint_for_other_lengths(tmp_path, tdim, tokens, first_col):
    src, path = _marked_1024(tmp_path)
    model = build_ast_from_pretrained(path, input_tdim=tdim)
    f, t = model.grid
    assert model.pos_embed.shape == (1, tokens, 64) and f == 12
    assert torch.equal(model.pos_embed[:, :2], src.pos_embed[:, :2])
    pe, ref = model.pos_embed[0, 2:].view(f, t, 64), src.pos_embed[0, 2:].view(12, 101, 64)
    if first_col is not None:  # time crop [50 - t//2 : 50 - t//2 + t], e.g. [25:75] for 512 frames
        assert first_col == 50 - t // 2
        assert torch.equal(pe, ref[:, first_col : first_col + t])
    else:
        assert torch.equal(pe[:, :, 0], torch.arange(12.0)[:, None].expand(12, t))
        assert pe[0, 0, 1] == 0 and pe[0, -1, 1] == 100 and (pe[0, 1:, 1] >= pe[0, :-1, 1]).all()
    assert model.labels is None and model.head[1].out_features == N_LABELS  # head kept


def test_patchmix_positional_quirk(tmp_path):
    _, path = _marked_1024(tmp_path)
    right = build_ast_from_pretrained(path, input_tdim=798)
    quirk = build_ast_from_pretrained(path, input_tdim=798, patchmix_pos_quirk=True)
    q = torch.arange(948)
    assert torch.equal(right.pos_embed[0, 2:, 1], (11 + q % 79).float())
    # crop [44:56] to a 12-column grid, frequency interpolated to 79 rows, consumed as 12x79
    torch.testing.assert_close(quirk.pos_embed[0, 2:, 1], (44 + q % 12).float(), atol=1e-5, rtol=0)


def test_adapt_pos_embed_identity_and_interpolation():
    pe = torch.randn(1, 2 + 12 * 101, 8)
    assert torch.equal(adapt_pos_embed(pe, (12, 101), (12, 101)), pe)
    out = adapt_pos_embed(pe, (12, 101), (24, 101))
    assert out.shape == (1, 2 + 24 * 101, 8)


def test_head_replacement_warns_and_drops_labels(hf):
    with pytest.warns(UserWarning, match=r"'head'.*5 -> 3 classes"):
        model = build_ast_from_pretrained(hf["path"], num_classes=3)
    assert model.head[1].out_features == 3 and model.labels is None
    assert model.pretrained_report["reinitialised"] == ["head"]
    model = create_model("ast_micro", pretrained=hf["path"], labels=list("abcde"))
    assert model.labels == list("abcde") and model.sed_config["kwargs"]["labels"] == list("abcde")


def test_create_model_with_pretrained_and_rebuild(hf):
    model = create_model("ast_base", pretrained=hf["path"], input_tdim=256).eval()
    cfg = model.sed_config
    assert (
        cfg["name"] == "ast_base" and cfg["kwargs"]["embed_dim"] == 64 and cfg["kwargs"]["input_tdim"] == 256
    )
    assert model.pos_embed.shape == (1, 2 + 12 * 25, 64)
    rebuilt = create_model(cfg["name"], **json.loads(json.dumps(cfg["kwargs"]))).eval()
    rebuilt.load_state_dict(model.state_dict())
    wave = 0.1 * torch.randn(1, 30000)
    with torch.no_grad():
        assert torch.equal(rebuilt(wave), model(wave))


def test_unexpected_and_missing_keys_raise(tmp_path):
    sd = _original_layout(_micro())
    extra = dict(sd, **{"module.v.blocks.0.attn.extra.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="unexpected keys.*attn.extra.weight"):
        build_ast_from_pretrained(extra)
    missing = {k: v for k, v in sd.items() if k != "module.v.blocks.1.norm1.weight"}
    with pytest.raises(CheckpointError, match="missing keys.*blocks.1.norm1.weight"):
        build_ast_from_pretrained(missing)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        build_ast_from_pretrained(sd, embed_dim=32, num_heads=2)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_needing_code_is_refused(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"pos_embed": torch.zeros(1), "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        build_ast_from_pretrained(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: a full unpickle runs it
    assert marker.exists()


def test_bad_sources(tmp_path):
    with pytest.raises(CheckpointError, match="sed checkpoint in memory"):
        build_ast_from_pretrained({"sed": {"model_name": "ast_micro"}, "state_dict": {"w": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="no such file"):
        build_ast_from_pretrained(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="unknown pretrained source"):
        build_ast_from_pretrained("not a source")
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not an AST checkpoint"):
        build_ast_from_pretrained(tmp_path / "other.safetensors")


@pytest.mark.parametrize("stride, grid", [(10, (12, 101)), (12, (10, 85)), (14, (9, 73)), (16, (8, 64))])
def test_grid_and_clip_length(stride, grid):
    model = create_model("ast_micro", fstride=stride, tstride=stride, depth=1)
    assert model.grid == grid and model.num_patches == grid[0] * grid[1]
    assert model.clip_samples == 1023 * 160 + 400 and model.sample_rate == 16000
    assert model.frontend.num_frames(model.clip_samples) == 1024


def test_forward_pieces_lengths_and_autocast():
    model = _micro()
    wave = 0.1 * torch.randn(2, 16000)
    with torch.no_grad():
        logits = model(wave)
        pooled, tokens = model.forward_features(wave)
        assert pooled.shape == (2, 64) and tokens.shape == (2, 146, 64)
        torch.testing.assert_close(model.embed(wave), pooled)
        torch.testing.assert_close(model.forward_fbank(model.frontend(wave)), logits)
        one = model(wave[1:, :9000])
        torch.testing.assert_close(model(wave, torch.tensor([16000, 9000]))[1:], one, atol=1e-5, rtol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(wave)
        assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
        assert (low.float() - logits).abs().max() < 0.1 * logits.abs().max()
    with pytest.raises(ValueError, match=r"expects features \[B, 128, 128\]"):
        model.forward_fbank(torch.zeros(1, 100, 128))


def test_short_names_hub_ids_and_deit_names_resolve_without_network(hf, tmp_path, monkeypatch):
    from sed.models.pretrained import sources

    asked = []
    bare = _write_hf_dir(hf, tmp_path, "v5_bin")  # no preprocessor_config.json

    def fake_download(repo_id):
        asked.append(repo_id)
        return bare if "speech" in repo_id else hf["path"]

    monkeypatch.setattr(sources, "hub_snapshot", fake_download)
    monkeypatch.setattr(sources, "timm_state", lambda name: asked.append(name) or _fake_deit())
    create_model("ast_base", pretrained=True)  # ast_base's default source is the 0.4593 AudioSet model
    sc = build_ast_from_pretrained("ast-speech-commands-v2")
    assert (sc.frontend.mean, sc.frontend.std) == (-6.845978, 5.5654526)
    build_ast_from_pretrained("MIT/ast-finetuned-audioset-16-16-0.442")
    deit = build_ast_from_pretrained("deit_base_distilled_patch16_384", num_classes=2, input_tdim=128)
    assert asked == [
        "MIT/ast-finetuned-audioset-10-10-0.4593",
        "MIT/ast-finetuned-speech-commands-v2",
        "MIT/ast-finetuned-audioset-16-16-0.442",
        "deit_base_distilled_patch16_384",
    ]
    assert deit.pretrained_report["format"] == "deit" and deit.sed_config["name"] == "ast_base"
