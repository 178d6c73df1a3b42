"""LAION-CLAP's original ``.pt`` releases mapped onto transformers' ``ClapModel``
(:mod:`sed.models.pretrained.clap_laion`) against outputs of the original ``laion_clap`` code
(github.com/LAION-AI/CLAP; ``tests/reference/clap/make_laion.py`` and its README).

The weights of ``laion_weights.json`` are written as a release file (``{"epoch", "name", "state_dict"}``,
the unfused one with DDP's ``module.`` prefix and a stale ``position_ids``), read back with
:func:`sed.checkpoint.read_checkpoint` (weights only), mapped, loaded into a ``ClapModel`` built from
:func:`laion_config` and fed the very features the original's audio tower received (its front end is
torchlibrosa's / torchaudio's, transformers' is the feature extractor's: compared separately, against sed's
``ClapMel``). Clips of 3, 10 and 15 s, alone and as one list; three prompts through the text tower.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import ClapConfig, ClapModel

from sed.checkpoint import read_checkpoint
from sed.errors import CheckpointError
from sed.models.clap_frontend import ClapMel
from sed.models.pretrained.clap_laion import claims_laion, from_laion, laion_config, unwrap
from tests.reference import common
from tests.reference.clap import HERE

MANIFEST = common.load_manifest(HERE / "laion_weights.json")
REF = dict(np.load(HERE / "laion_outputs.npz"))
SECONDS = MANIFEST["seconds"]
TAGS = ("unfused", "fused")
#: agreement reached with the original (float32): max |difference| of unit-norm embeddings
ATOL = 1e-6
#: derived buffers transformers builds itself (the mapping drops the release's copies)
DERIVED = ("relative_position_index", "position_ids", "token_type_ids")


def release_state(tag: str) -> dict[str, torch.Tensor]:
    keys = set(REF[f"{tag}_keys"].tolist())
    return {k: v for k, v in common.tensors_from(MANIFEST).items() if k in keys}


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Each release file as ``read_checkpoint`` gives it back."""
    out = {}
    for tag in TAGS:
        state = release_state(tag)
        prefix = "module." if tag == "unfused" else ""
        state = {prefix + k: v for k, v in state.items()}
        if tag == "unfused":  # what releases saved with transformers < 4.31 carry
            state["module.text_branch.embeddings.position_ids"] = torch.arange(80)[None]
        path = tmp_path_factory.mktemp("laion") / f"{tag}.pt"
        torch.save({"epoch": 15, "name": f"tiny-{tag}", "state_dict": state}, path)
        desc, obj = read_checkpoint(path)
        assert desc is None and obj["epoch"] == 15
        out[tag] = (path, obj)
    return out


@pytest.fixture(scope="module")
def models(releases):
    out = {}
    for tag, (path, obj) in releases.items():
        model = ClapModel(ClapConfig(**laion_config(obj, path))).eval()
        missing, unexpected = model.load_state_dict(from_laion(obj, path), strict=False)
        assert unexpected == [] and [k for k in missing if not k.endswith(DERIVED)] == []
        out[tag] = model
    return out


def features(tag: str, seconds: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    f = torch.from_numpy(REF[f"{tag}_{seconds:g}s_features"])
    if tag == "fused" and f.shape[1] == 1:  # stored once: a clip <= 10 s has the same mel four times
        f = f.expand(-1, 4, -1, -1)
    longer = REF.get(f"{tag}_{seconds:g}s_longer")
    return f, None if longer is None else torch.from_numpy(longer)


def audio_embedding(model, feats, longer) -> torch.Tensor:
    with torch.no_grad():
        out = model.get_audio_features(input_features=feats, is_longer=longer)
    return torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)


def check(ours, ref, what):
    common.assert_close(ours, ref, what)
    diff = float(np.abs(ours.numpy() - ref).max())
    assert diff <= ATOL, f"{what}: max |sed - original| = {diff:.3g}"


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("seconds", SECONDS, ids=[f"{s:g}s" for s in SECONDS])
def test_audio_embedding_equals_the_original(models, tag, seconds):
    feats, longer = features(tag, seconds)
    if tag == "fused":
        assert bool(longer.all()) == (seconds > 10)  # the original's own "longer" flag
    ours = audio_embedding(models[tag], feats, longer)
    check(ours, REF[f"{tag}_{seconds:g}s_embedding"], f"{tag} {seconds:g}-s audio embedding")


@pytest.mark.parametrize("tag", TAGS)
def test_list_of_clips_equals_the_original_batch(models, tag):
    parts = [features(tag, s) for s in SECONDS]
    feats = torch.cat([f for f, _ in parts])
    longer = None if tag == "unfused" else torch.cat([lg for _, lg in parts])
    if longer is not None:
        assert np.array_equal(longer.numpy(), REF["fused_list_longer"])
    check(audio_embedding(models[tag], feats, longer), REF[f"{tag}_list_embedding"], f"{tag} batch")


@pytest.mark.parametrize("tag", TAGS)
def test_text_embedding_equals_the_original(models, tag):
    with torch.no_grad():
        out = models[tag].get_text_features(
            input_ids=torch.from_numpy(REF[f"{tag}_text_input_ids"]),
            attention_mask=torch.from_numpy(REF[f"{tag}_text_attention_mask"]),
        )
    ours = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)
    check(ours, REF[f"{tag}_text_embedding"], f"{tag} text embedding")
    scale = float(release_state(tag)["logit_scale_a"])
    assert float(models[tag].logit_scale_a.detach()) == pytest.approx(scale)


@pytest.mark.parametrize("fused", [False, True], ids=TAGS)
def test_sed_front_end_against_the_original(fused):
    """The original's front end (int16 round trip, repeat-pad, torchlibrosa Slaney log-mel unfused /
    torchaudio HTK log-mel fused) against sed's ClapMel with the same parameters on clips <= 10 s."""
    cfg = MANIFEST["model_cfg"]["audio_cfg"]
    mel = ClapMel(cfg["sample_rate"], cfg["mel_bins"], 10.0, cfg["window_size"], cfg["hop_size"],
                  cfg["fmin"], cfg["fmax"], fused=fused)  # fmt: skip
    for seconds in (3.0, 10.0):
        wave = common.signal(seconds, cfg["sample_rate"], 0)[0]
        wave = (np.clip(wave, -1, 1) * 32767.0).astype(np.int16) / 32767.0  # the original's quantisation
        ours = mel(torch.from_numpy(wave.astype(np.float32))[None])[:, :1]
        ref = REF[f"{TAGS[fused]}_{seconds:g}s_features"]
        assert ours.shape == ref.shape
        assert float(np.abs(ours.numpy() - ref).max()) < (1e-5 if fused else 1e-3)  # dB


def test_config_read_from_the_tensors(releases):
    path, obj = releases["fused"]
    cfg = laion_config(obj, path)
    audio, text = cfg["audio_config"], cfg["text_config"]
    assert (
        audio["enable_fusion"]
        and not laion_config(*releases["unfused"][::-1])["audio_config"]["enable_fusion"]
    )
    htsat = MANIFEST["htsat"]
    assert audio["depths"] == htsat["depths"] and audio["num_attention_heads"] == htsat["num_heads"]
    assert (audio["patch_embeds_hidden_size"], audio["window_size"], audio["hidden_size"]) == (8, 8, 64)
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (64, 1, 1)
    assert (text["max_position_embeddings"], text["layer_norm_eps"], cfg["projection_dim"]) == (80, 1e-5, 16)
    assert claims_laion(obj) and unwrap(obj) is obj["state_dict"]
    assert not claims_laion({"audio_model.audio_encoder.norm.weight": torch.ones(2)})


def _refusal(state, match):
    with pytest.raises(CheckpointError, match=match) as err:
        from_laion(state, "x.pt")
    assert "\n" not in str(err.value) and "x.pt" in str(err.value)
    with pytest.raises(CheckpointError, match=match):
        laion_config(state, "x.pt")


def test_what_clapmodel_cannot_hold_is_one_line():
    state = release_state("fused")
    _refusal({"audio_model.x": torch.ones(1)}, "not a laion_clap checkpoint")
    pann = {k: v for k, v in state.items() if not k.startswith("audio_branch.")}
    pann["audio_branch.conv_block1.conv1.weight"] = torch.ones(1)
    _refusal(pann, "PANN")
    _refusal({**state, "audio_branch.mel_conv1d.0.weight": torch.ones(1)}, "1-D feature fusion")
    bert = dict(state, **{"text_branch.embeddings.token_type_embeddings.weight": torch.ones(2, 64)})
    _refusal(bert, "BERT")
    clip = {k: v for k, v in state.items() if not k.startswith("text_branch.")}
    _refusal({**clip, "text_branch.resblocks.0.attn.in_proj_weight": torch.ones(1)}, "CLIP")
    with pytest.raises(CheckpointError, match="no place for, e.g. audio_branch.extra"):
        from_laion({**state, "audio_branch.extra.weight": torch.ones(1)}, "x.pt")


@pytest.mark.parametrize("tag", TAGS)
def test_release_file_loads_through_sed(releases, tag):
    """The release file itself as a sed model (the clap family's importer): ClapAudio's embedding of the
    original's int16-rounded clips <= 10 s equals the original's (front end included; the tiny fixture's
    hop and window given as overrides: a release file carries no front-end config).

    Fused: the original, in eval mode, runs a batch with no clip over 10 s WITHOUT the fusion branch
    (``longer_idx=[]``: the global mel only), and so does sed's ClapAudio by default. With
    ``fuse_short_clips`` (what transformers' feature extractor gives a clip scored alone: the fusion branch
    on four identical channels) it differs from the original by much more than rounding."""
    from sed.models.loading import load_model

    cfg = MANIFEST["model_cfg"]["audio_cfg"]
    path, _ = releases[tag]
    model, desc = load_model(path, n_fft=cfg["window_size"], hop_length=cfg["hop_size"])
    assert desc["model_name"] == "clap_htsat_tiny" and model.fused == (tag == "fused")
    for seconds in (3.0, 10.0):
        wave = common.signal(seconds, cfg["sample_rate"], 0)
        wave = torch.from_numpy(
            ((np.clip(wave, -1, 1) * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)
        )
        ref = REF[f"{tag}_{seconds:g}s_embedding"]
        with torch.no_grad():
            ours = torch.nn.functional.normalize(model.embed(wave), dim=-1)
            if tag == "fused":
                fusing = load_model(
                    path, n_fft=cfg["window_size"], hop_length=cfg["hop_size"], fuse_short_clips=True
                )
                other = torch.nn.functional.normalize(fusing[0].embed(wave), dim=-1)
                quirk = common.max_rel_diff(other, ref)
                assert quirk > 100 * common.TOLERANCE, (
                    f"the fusion branch on short clips is within {quirk:.3g}"
                )
        common.assert_close(ours, ref, f"sed {tag} {seconds:g}-s embedding")


def test_release_file_has_no_text_side(releases):
    """A release file holds the text tower but not its tokenizer (roberta-base's): zero-shot labels from it
    are one line pointing to the Hugging Face layout."""
    from sed.models.pretrained.clap import text_encoder
    from sed.models.pretrained.sources import resolve

    path, _ = releases["fused"]
    with pytest.raises(CheckpointError, match="no tokenizer: text labels need a Hugging Face CLAP") as err:
        text_encoder(resolve(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
