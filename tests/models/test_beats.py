"""BEATs: front end, the release ``.pt`` layout, equivalence with the reference's forward, Patch-Mix, export.

The release layout and the reference forward below are written from microsoft/unilm ``beats/BEATs.py``
(commit c68101b66c2d2918b14af468d710b50feba48c16) and ``beats/backbone.py`` (commit
9102ed91f8e56baa31d7ae7e09e0ec98e77d779c): module names (``BEATs`` -> ``post_extract_proj``,
``patch_embedding``, ``encoder`` (``pos_conv`` = weight_norm(Conv1d, dim=2) + SamePad + GELU, ``layers``,
``layer_norm``), ``layer_norm``, ``predictor``), the shared relative bias (layer 0's module assigned to
every layer, so every layer's copy is in the state dict) and the ``cfg`` / ``label_dict`` of the files.
"""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torchaudio.compliance import kaldi

from sed.data.audioset import audioset_mids
from sed.errors import CheckpointError
from sed.models import beats as beats_module  # noqa: F401 - registers the sizes
from sed.models.beats import BEATsFbank
from sed.models.beats import WEIGHTS
from sed.models.pretrained import sources
from sed.models.registry import create_model

torch.set_num_threads(1)
MICRO_CFG = {"input_patch_size": 16, "embed_dim": 32, "conv_bias": False, "encoder_layers": 2,
             "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 2,
             "activation_fn": "gelu", "layer_norm_first": False, "deep_norm": True, "dropout": 0.0,
             "attention_dropout": 0.0, "activation_dropout": 0.0, "encoder_layerdrop": 0.0, "dropout_input": 0.0,
             "conv_pos": 16, "conv_pos_groups": 4, "relative_position_embedding": True, "num_buckets": 320,
             "max_distance": 800, "gru_rel_pos": True, "finetuned_model": True, "predictor_dropout": 0.0,
             "predictor_class": 527}


# ---------------------------------------------------------------------- the release file, written from the reference
def release_state(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.05, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    e, d, f = cfg["embed_dim"], cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"]
    h, k, p = cfg["encoder_attention_heads"], cfg["conv_pos"], cfg["input_patch_size"]
    sd = {"post_extract_proj.weight": r(d, e, std=0.2), "post_extract_proj.bias": r(d),
          "patch_embedding.weight": r(e, 1, p, p, std=0.1),
          "encoder.pos_conv.0.bias": r(d), "encoder.pos_conv.0.weight_g": r(1, 1, k, std=0.3, mean=1.0),
          "encoder.pos_conv.0.weight_v": r(d, d // cfg["conv_pos_groups"], k, std=0.1)}
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
        sd["predictor.weight"], sd["predictor.bias"] = r(cfg["predictor_class"], d, std=0.1), r(cfg["predictor_class"])
    return sd


def label_dict(n=527, seed=0) -> dict[int, str]:
    """The release form ``{predictor row: AudioSet mid}`` (the BEATs README: ``label_dict[label_idx.item()]``)."""
    rows = list(range(n))
    random.Random(seed).shuffle(rows)  # the release's own row order, not the ontology's
    return {row: mid for mid, row in zip(audioset_mids(), rows)}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    path = tmp_path_factory.mktemp("beats") / "BEATs_micro_finetuned.pt"
    torch.save({"cfg": dict(MICRO_CFG), "model": release_state(MICRO_CFG), "label_dict": label_dict()}, path)
    return path


# ---------------------------------------------------------------------- the reference's forward, as it computes it
def ref_bucket(rel, num_buckets, max_distance):
    nb = num_buckets // 2
    out = (rel > 0).long() * nb
    rel = rel.abs()
    exact = nb // 2
    large = exact + (torch.log(rel.float() / exact) / math.log(max_distance / exact) * (nb - exact)).long()
    large = torch.min(large, torch.full_like(large, nb - 1))
    return out + torch.where(rel < exact, rel, large)


def ref_forward(sd, cfg, wave):
    """Logits (before the sigmoid), the token means and the fbank of BEATs.extract_features in eval mode."""
    fb = torch.stack([kaldi.fbank(w[None] * 2**15, num_mel_bins=128, sample_frequency=16000, frame_length=25,
                                  frame_shift=10) for w in wave])
    fb = (fb - 15.41663) / (2 * 6.55582)
    x = F.conv2d(fb.unsqueeze(1), sd["patch_embedding.weight"], stride=cfg["input_patch_size"])
    x = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)
    x = F.layer_norm(x, x.shape[-1:], sd["layer_norm.weight"], sd["layer_norm.bias"])
    x = F.linear(x, sd["post_extract_proj.weight"], sd["post_extract_proj.bias"])
    v, gn = sd["encoder.pos_conv.0.weight_v"], sd["encoder.pos_conv.0.weight_g"]
    w = gn * v / v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
    k = cfg["conv_pos"]
    c = F.conv1d(x.transpose(1, 2), w, sd["encoder.pos_conv.0.bias"], padding=k // 2, groups=cfg["conv_pos_groups"])
    c = F.gelu(c[:, :, :-1] if k % 2 == 0 else c)
    x = x + c.transpose(1, 2)
    x = F.layer_norm(x, x.shape[-1:], sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    x = x.transpose(0, 1)  # T x B x C
    n, b, d = x.shape
    h = cfg["encoder_attention_heads"]
    hd, depth = d // h, cfg["encoder_layers"]
    alpha_dn = math.pow(2 * depth, 1 / 4)
    pos = torch.arange(n)
    bucket = ref_bucket(pos[None, :] - pos[:, None], cfg["num_buckets"], cfg["max_distance"])
    bias = F.embedding(bucket, sd["encoder.layers.0.self_attn.relative_attention_bias.weight"]).permute(2, 0, 1)
    bias = bias.unsqueeze(0).repeat(b, 1, 1, 1).view(b * h, n, n)
    for i in range(depth):
        p = f"encoder.layers.{i}."
        a = p + "self_attn."
        scaling, alpha = hd**-0.5, 32
        q = F.linear(x, sd[a + "q_proj.weight"], sd[a + "q_proj.bias"]) * scaling / alpha
        kk = F.linear(x, sd[a + "k_proj.weight"], sd[a + "k_proj.bias"])
        vv = F.linear(x, sd[a + "v_proj.weight"], sd[a + "v_proj.bias"])
        q = q.contiguous().view(n, b * h, hd).transpose(0, 1)
        kk = kk.contiguous().view(-1, b * h, hd).transpose(0, 1)
        vv = vv.contiguous().view(-1, b * h, hd).transpose(0, 1)
        att = torch.bmm(q, kk.transpose(1, 2))
        att = (att - att.max(dim=-1, keepdim=True)[0]) * alpha
        ql = q.view(b, h, n, hd) * alpha / scaling
        gates = torch.sigmoid(F.linear(ql, sd[a + "grep_linear.weight"], sd[a + "grep_linear.bias"])
                              .view(b, h, n, 2, 4).sum(-1))
        ga, gb = gates.chunk(2, dim=-1)
        gate = ga * (gb * sd[a + "grep_a"] - 1.0) + 2.0
        att = att + (gate.view(b * h, n, 1) * bias).view(att.size())
        o = torch.bmm(F.softmax(att, dim=-1), vv).transpose(0, 1).contiguous().view(n, b, d)
        o = F.linear(o, sd[a + "out_proj.weight"], sd[a + "out_proj.bias"])
        x = F.layer_norm(x * alpha_dn + o, (d,), sd[p + "self_attn_layer_norm.weight"], sd[p + "self_attn_layer_norm.bias"])
        y = F.linear(F.gelu(F.linear(x, sd[p + "fc1.weight"], sd[p + "fc1.bias"])), sd[p + "fc2.weight"], sd[p + "fc2.bias"])
        x = F.layer_norm(x * alpha_dn + y, (d,), sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"])
    x = x.transpose(0, 1)
    logits = F.linear(x, sd["predictor.weight"], sd["predictor.bias"]).mean(dim=1) if "predictor.weight" in sd else None
    return logits, x.mean(dim=1), fb


def clip(frames: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return 0.1 * torch.randn(batch, (frames - 1) * 160 + 400, generator=torch.Generator().manual_seed(seed))


def ontology_order() -> list[int]:
    by_mid = {mid: row for row, mid in label_dict().items()}
    return [by_mid[m] for m in audioset_mids()]


# ---------------------------------------------------------------------- tests
def test_front_end_is_kaldi_fbank_of_the_scaled_wave():
    wave = clip(101, 3)
    ref = torch.stack([kaldi.fbank(w[None] * 2**15, num_mel_bins=128, sample_frequency=16000, frame_length=25,
                                   frame_shift=10) for w in wave])
    raw = BEATsFbank(target_length=None)
    assert (raw.fbank(wave) - ref).abs().max() < 1e-4
    assert (raw(wave) - (ref - 15.41663) / (2 * 6.55582)).abs().max() < 1e-4
    padded = BEATsFbank(target_length=120)(wave)
    assert padded.shape == (3, 120, 128) and torch.equal(padded[:, :101], raw(wave))


@pytest.mark.parametrize("how", ["load_model", "pretrained", "short_name"])
def test_release_file_loads_and_equals_the_reference(release, how, monkeypatch):
    from sed.models.loading import load_model

    if how == "load_model":
        model, desc = load_model(release, input_tdim=64)
        assert desc["multi_label"] and desc["labels"][0] == "Speech"
    elif how == "pretrained":
        model = create_model("beats_micro", pretrained=str(release), input_tdim=64).eval()
    else:
        seen = []
        monkeypatch.setattr(sources, "hub_file", lambda repo, name: seen.append(f"hf://{repo}/{name}") or str(release))
        model = create_model("beats_iter3", pretrained=True, input_tdim=64).eval()
        assert seen == [WEIGHTS[0].sources[0]] and WEIGHTS[0].name == "beats-iter3-plus-as2m"
    assert model.multi_label and len(model.labels) == 527 and model.labels[0] == "Speech"
    assert model.sed_config["kwargs"]["embed_dim"] == 64
    wave = clip(64)
    ref_logits, _, _ = ref_forward(release_state(MICRO_CFG), MICRO_CFG, wave)
    with torch.no_grad():
        got = model(wave)
    assert (got - ref_logits[:, ontology_order()]).abs().max() < 1e-4


def test_any_length_from_one_checkpoint(release):
    sd = release_state(MICRO_CFG)
    for frames in (16, 100, 400):  # 400 frames: 200 tokens, past the 80 exact buckets into the log ones
        model = create_model("beats_micro", pretrained=str(release), input_tdim=frames).eval()
        wave = clip(frames, seed=frames)
        with torch.no_grad():
            got = model(wave)
        assert (got - ref_forward(sd, MICRO_CFG, wave)[0][:, ontology_order()]).abs().max() < 1e-4


def test_pretrained_only_file_gets_a_new_head(tmp_path):
    cfg = {**MICRO_CFG, "finetuned_model": False}
    path = tmp_path / "BEATs_micro.pt"
    torch.save({"cfg": cfg, "model": release_state(cfg)}, path)
    with pytest.warns(UserWarning, match="re-initialised the classifier head"):
        model = create_model("beats_micro", num_classes=3, pretrained=str(path), input_tdim=48).eval()
    assert model.num_classes == 3 and model.labels is None and not model.multi_label
    wave = clip(48)
    with torch.no_grad():
        assert (model.embed(wave) - ref_forward(release_state(cfg), cfg, wave)[1]).abs().max() < 1e-4


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
    torch.save({"cfg": dict(MICRO_CFG), "model": sd, "label_dict": {m: r for r, m in label_dict().items()}}, inverse)
    with pytest.raises(CheckpointError, match=r"label_dict is not \{predictor row: AudioSet mid\}"):
        create_model("beats_micro", pretrained=str(inverse))
    with pytest.raises(CheckpointError, match="layer_norm_first"):
        create_model("beats_micro", pretrained=_write(tmp_path, "preln.pt", sd, {**MICRO_CFG, "layer_norm_first": True}))


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
    logits, pooled, y_a, y_b, lam, index = model.forward_patch_mix(feats, y, beta=0.0)  # lam = 1: nothing swapped
    assert lam == 1.0 and torch.allclose(logits, model.forward_from_features(feats), atol=1e-6)
    assert model.grid == (8, 4) and pooled.shape == (4, 64)
    _, _, _, _, lam, _ = model.forward_patch_mix(feats, y, beta=1.0, time_domain=True)
    assert lam in {1 - i / 4 for i in range(5)}  # whole time columns of the (f, t) grid
    task = PatchMixTask(method="patchmix_cl", model_name="beats_micro", model_kwargs={"input_tdim": 64},
                        num_classes=3, lr=1e-3)
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
