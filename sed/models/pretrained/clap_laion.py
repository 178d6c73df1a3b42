"""LAION-CLAP's original ``.pt`` releases (``630k-audioset-best.pt``, ``630k-audioset-fusion-best.pt``,
``music_speech_audioset_epoch_15_esc_89.98.pt``, ... of the ``laion_clap`` package) as transformers'
``ClapModel``: the key mapping and the config read from the tensors. Pure functions on a state dict; the
file itself is read with :func:`sed.checkpoint.read_checkpoint` (``torch.load(weights_only=True)``: a
release is ``{"epoch", "name", "state_dict", "optimizer"...}`` of plain tensors and numbers).

The mapping (written from the package's modules, ``clap_module/model.py`` and ``htsat.py``, and
transformers' ``modeling_clap.py``; checked against the original's own outputs in
``tests/models/test_clap_laion.py``):

- ``module.`` (a DDP save) is stripped;
- ``audio_branch.X`` -> ``audio_model.audio_encoder.X``, with ``bn0`` -> ``batch_norm``, in each Swin block
  ``norm1``/``norm2`` -> ``layernorm_before``/``layernorm_after``, ``attn.qkv`` split in three rows blocks
  -> ``attention.self.query|key|value``, ``attn.proj`` -> ``attention.output.dense``,
  ``attn.relative_position_bias_table`` -> ``attention.self.relative_position_bias_table``, ``mlp.fc1|fc2``
  -> ``intermediate.dense|output.dense``; the patch embedding, the fusion modules (``mel_conv2d``,
  ``fusion_model`` of ``aff_2d``), the patch merging and the final norm keep their names;
- ``text_branch.X`` -> ``text_model.X`` (both are RoBERTa's modules);
- ``audio_projection.0|2`` / ``text_projection.0|2`` -> ``*.linear1|linear2``; ``logit_scale_a|t`` kept;
- dropped: the torchlibrosa front end (``spectrogram_extractor``, ``logmel_extractor``: the features are
  the front end's job), AudioSet's ``tscam_conv`` and ``head``, the training-only ``audio_transform`` and
  ``text_transform``, and the buffers transformers recomputes from the config (``relative_position_index``,
  ``attn_mask``, ``position_ids``).

What ``ClapModel`` cannot hold is refused with one :class:`~sed.errors.CheckpointError` line: a PANN audio
tower, an absolute position embedding, a 1-D fusion (``mel_conv1d``), a text tower other than RoBERTa (CLIP's
transformer, BERT, BART), a key this mapping does not know.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from sed.errors import CheckpointError

__all__ = ["claims_laion", "from_laion", "laion_config", "unwrap"]

_DROP = (
    "audio_branch.spectrogram_extractor.",
    "audio_branch.logmel_extractor.",
    "audio_branch.tscam_conv.",
    "audio_branch.head.",
    "audio_transform.",
    "text_transform.",
)
_DERIVED = ("relative_position_index", "attn_mask", "position_ids")
_BLOCK = {
    "norm1.": "layernorm_before.",
    "norm2.": "layernorm_after.",
    "attn.proj.": "attention.output.dense.",
    "attn.relative_position_bias_table": "attention.self.relative_position_bias_table",
    "mlp.fc1.": "intermediate.dense.",
    "mlp.fc2.": "output.dense.",
}
_BLOCK_KEY = re.compile(r"^(layers\.\d+\.blocks\.\d+\.)(.*)$")
_KEEP = re.compile(r"^(patch_embed\.|layers\.\d+\.downsample\.|norm\.)")
_PROJ = re.compile(r"^(audio|text)_projection\.([02])\.(weight|bias)$")


def unwrap(obj: Mapping) -> Mapping:
    """The state dict of a release: its ``state_dict`` entry, else the mapping itself."""
    inner = obj.get("state_dict") if isinstance(obj, Mapping) else None
    return inner if isinstance(inner, Mapping) else obj


def _strip(state: Mapping) -> dict[str, torch.Tensor]:
    state = unwrap(state)
    return {str(k).removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def claims_laion(state: Mapping) -> bool:
    """Whether ``state`` (a release dict or its state dict) has the keys of a ``laion_clap`` CLAP model."""
    keys = _strip(state)
    return any(k.startswith("audio_branch.") for k in keys) and any(
        k.startswith("audio_projection.0.") for k in keys
    )


def _check_towers(state: dict[str, torch.Tensor], desc) -> None:
    if not claims_laion(state):
        raise CheckpointError(desc, "is not a laion_clap checkpoint (no audio_branch.* / audio_projection.*)")
    if "audio_branch.patch_embed.proj.weight" not in state:
        kind = "PANN (CNN)" if any(k.startswith("audio_branch.conv_block") for k in state) else "unknown"
        raise CheckpointError(desc, f"has a {kind} audio tower: ClapModel holds LAION's HTSAT only")
    for key, why in (
        ("audio_branch.absolute_pos_embed", "an absolute position embedding (ape)"),
        ("audio_branch.mel_conv1d.0.weight", "a 1-D feature fusion (daf/aff/iaff_1d)"),
    ):
        if key in state:
            raise CheckpointError(desc, f"has {why}, which ClapModel cannot hold")
    if any(k.startswith("text_branch.resblocks.") or k == "token_embedding.weight" for k in state):
        raise CheckpointError(desc, "has CLIP's text transformer: ClapModel's text tower is RoBERTa")
    if any(k.startswith("text_branch.encoder.layers.") or k.startswith("text_branch.shared.") for k in state):
        raise CheckpointError(desc, "has a BART text tower: ClapModel's text tower is RoBERTa")
    types = state.get("text_branch.embeddings.token_type_embeddings.weight")
    if types is None or "text_branch.pooler.dense.weight" not in state:
        raise CheckpointError(desc, "has no RoBERTa text tower (text_branch.embeddings / pooler missing)")
    if types.shape[0] != 1:
        raise CheckpointError(
            desc,
            f"has a BERT text tower ({types.shape[0]} token types; RoBERTa has 1): "
            "ClapModel's text tower is RoBERTa",
        )


def _audio_key(rest: str, value: torch.Tensor, out: dict, desc) -> bool:
    """Map ``audio_branch.<rest>``; False for a key this mapping does not know."""
    enc = "audio_model.audio_encoder."
    if rest.startswith("bn0."):
        out[enc + "batch_norm." + rest[4:]] = value
        return True
    m = _BLOCK_KEY.match(rest)
    if m:
        head, tail = m.groups()
        if tail.startswith("attn.qkv."):
            kind = tail.removeprefix("attn.qkv.")
            if value.shape[0] % 3:
                raise CheckpointError(desc, f"audio_branch.{rest} has {value.shape[0]} rows, not 3 x width")
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                out[f"{enc}{head}attention.self.{name}.{kind}"] = part.clone()
            return True
        for old, new in _BLOCK.items():
            if tail.startswith(old):
                out[enc + head + new + tail[len(old) :]] = value
                return True
        return False
    if _KEEP.match(rest):
        out[enc + rest] = value
        return True
    return False


def from_laion(state: Mapping, desc) -> dict[str, torch.Tensor]:
    """LAION ``laion_clap`` keys -> transformers ``ClapModel`` keys (module docstring); ``desc`` names the
    file in the one-line :class:`~sed.errors.CheckpointError` of a tower ClapModel cannot hold."""
    state = _strip(state)
    _check_towers(state, desc)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.startswith(_DROP) or key.endswith(_DERIVED):
            continue
        if key in ("logit_scale_a", "logit_scale_t"):
            out[key] = value
        elif m := _PROJ.match(key):
            tower, idx, kind = m.groups()
            out[f"{tower}_projection.linear{1 if idx == '0' else 2}.{kind}"] = value
        elif key.startswith("text_branch."):
            out["text_model." + key.removeprefix("text_branch.")] = value
        elif not (key.startswith("audio_branch.") and _audio_key(key[13:], value, out, desc)):
            unknown.append(key)
    if unknown:
        raise CheckpointError(desc, f"has {len(unknown)} keys ClapModel has no place for, e.g. {unknown[0]}")
    return out


def _count(state: Mapping, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def laion_config(state: Mapping, desc) -> dict:
    """A ``ClapConfig`` dict (``audio_config``, ``text_config``, ``projection_dim``...) read from the
    tensors of a LAION release: fused or not, HTSAT widths/depths/heads/window, the RoBERTa text tower.
    Text attention heads are not in the tensors: RoBERTa's 64-wide heads are assumed (base 12, large 16)."""
    state = _strip(state)
    _check_towers(state, desc)
    a = "audio_branch."
    width = int(state[a + "patch_embed.proj.weight"].shape[0])
    patch = state[a + "patch_embed.proj.weight"].shape[-2:]
    stages = _count(state, r"^audio_branch\.layers\.(\d+)\.")
    depths = [_count(state, rf"^audio_branch\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages)]
    heads = [
        int(state[f"{a}layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1])
        for i in range(stages)
    ]
    side = math.isqrt(int(state[f"{a}layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]))
    hidden = int(state[a + "norm.weight"].shape[0])
    proj_in = int(state["audio_projection.0.weight"].shape[1])
    if not stages or 0 in depths or hidden != width * 2 ** (stages - 1) or proj_in != hidden:
        raise CheckpointError(
            desc,
            f"its HTSAT does not add up: width {width}, depths {depths}, last norm {hidden}, "
            f"audio_projection input {proj_in}",
        )
    if (
        patch[0] != patch[1]
        or side * side != state[f"{a}layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    ):
        raise CheckpointError(desc, f"has a {tuple(patch)} patch or a non-square window table")
    t = "text_branch."
    words = state[t + "embeddings.word_embeddings.weight"]
    text_hidden = int(words.shape[1])
    if text_hidden % 64:
        raise CheckpointError(desc, f"has a {text_hidden}-wide text tower (not RoBERTa's 64-wide heads)")
    text = {
        "vocab_size": int(words.shape[0]),
        "hidden_size": text_hidden,
        "num_hidden_layers": _count(state, r"^text_branch\.encoder\.layer\.(\d+)\."),
        "num_attention_heads": text_hidden // 64,
        "intermediate_size": int(state[t + "encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "max_position_embeddings": int(state[t + "embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,  # roberta-base's (transformers' ClapTextConfig default is 1e-12)
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "projection_dim": int(state["text_projection.2.weight"].shape[0]),
    }
    projection = int(state["audio_projection.2.weight"].shape[0])
    if text["projection_dim"] != projection:
        raise CheckpointError(
            desc, f"projects audio to {projection} dims and text to {text['projection_dim']}"
        )
    audio = {
        "patch_embeds_hidden_size": width,
        "depths": depths,
        "num_attention_heads": heads,
        "window_size": (side + 1) // 2,
        "hidden_size": hidden,
        "num_mel_bins": int(state[a + "bn0.weight"].shape[0]),
        "spec_size": 256,
        "patch_size": int(patch[0]),
        "patch_stride": [4, 4],
        "enable_fusion": a + "patch_embed.mel_conv2d.weight" in state,
        "projection_dim": projection,
        "projection_hidden_act": "relu",
    }
    return {"audio_config": audio, "text_config": text, "projection_dim": projection, "model_type": "clap"}
