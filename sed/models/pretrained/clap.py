"""LAION-CLAP in the Hugging Face layout (``laion/clap-htsat-unfused`` and the like): the importer of its
audio tower (:class:`~sed.models.clap.ClapAudio`) and :class:`ClapText`, its text tower with the tokenizer.

A CLAP directory holds ``config.json`` (``model_type: clap``, ``audio_config``, ``text_config``),
``model.safetensors`` (or ``pytorch_model.bin``) with transformers' ``ClapModel`` keys, the feature
extractor's parameters (``preprocessor_config.json``, or the ``feature_extractor`` of
``processor_config.json``) and the tokenizer's files (``tokenizer.json``, or ``vocab.json`` +
``merges.txt``). Nothing runs remote code: the architecture is read from the config and built by sed
(transformers' classes), the weights are tensors. The audio tower takes ``audio_model.*`` and
``audio_projection.*``; the text tower ``text_model.*``, ``text_projection.*``; ``logit_scale_a`` is the
cosine scale of zero-shot classes. A config that contradicts itself or the weights, or a missing tokenizer
file, is one :class:`~sed.errors.CheckpointError`.

An original ``laion_clap`` release (``630k-audioset-best.pt`` ...) is imported too: its keys are mapped and
its config read from the tensors by :mod:`sed.models.pretrained.clap_laion`, its front end is
``laion_clap``'s (48 kHz, 1024/480, 50-14000 Hz, 10 s); it has no tokenizer, so it gives the audio tower only.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from sed.errors import CheckpointError, one_line, short
from sed.models.pretrained.build import Arch, Importer
from sed.models.pretrained.clap_laion import claims_laion, from_laion, laion_config
from sed.models.pretrained.huggingface import _get
from sed.models.pretrained.sources import Contents, _read_json

__all__ = ["IMPORTER", "ClapText", "feature_config", "logit_scale", "text_encoder"]

_AUDIO = ("audio_model.", "audio_projection.")
_TEXT = ("text_model.", "text_projection.")
_TOWER = "tower."
#: the front end of laion_clap's HTSAT audio config: what an original ``.pt`` release has no file for
_LAION_FRONTEND = {
    "sample_rate": 48000,
    "clip_seconds": 10.0,
    "n_fft": 1024,
    "hop_length": 480,
    "f_min": 50.0,
    "f_max": 14000.0,
}


def _laion(contents: Contents) -> bool:
    """An original ``laion_clap`` release file (``630k-audioset-best.pt`` ...): mapped by
    :mod:`sed.models.pretrained.clap_laion`."""
    return contents.config is None and claims_laion(contents.state)


def _claims(contents: Contents) -> bool:
    cfg = contents.config or {}
    return (
        cfg.get("model_type") == "clap"
        or any(str(k).startswith("audio_model.audio_encoder.") for k in contents.state)
        or _laion(contents)
    )


def _map_keys(contents: Contents) -> tuple[dict[str, torch.Tensor], list[str]]:
    state, dropped = {}, []
    source = from_laion(contents.state, contents.desc) if _laion(contents) else contents.state
    for key, value in source.items():
        if str(key).startswith(_AUDIO):
            state[_TOWER + key] = value
        else:
            dropped.append(str(key))
    return state, dropped


def feature_config(contents: Contents) -> dict:
    """The feature extractor's parameters: ``preprocessor_config.json``, else the ``feature_extractor`` of
    ``processor_config.json``; a one-line CheckpointError when the directory has neither."""
    if contents.preprocessor is not None:
        return contents.preprocessor
    if contents.directory is not None:
        proc = _read_json(contents.directory / "processor_config.json", contents.directory)
        if proc is not None and isinstance(proc.get("feature_extractor"), dict):
            return proc["feature_extractor"]
    raise CheckpointError(
        contents.desc, "has no feature extractor config (preprocessor_config.json or processor_config.json)"
    )


def _sub(cfg: dict, key: str, where: str) -> dict:
    sub = cfg.get(key)
    if not isinstance(sub, dict):
        raise CheckpointError(where, f"{key} is {short(sub)}, not a JSON object")
    return sub


def _arch(contents: Contents, state: dict[str, torch.Tensor]) -> Arch:
    laion = _laion(contents)
    config = laion_config(contents.state, contents.desc) if laion else contents.config
    if config is None:
        raise CheckpointError(contents.desc, "is not a CLAP directory (no config.json)")
    where = contents.desc if laion else f"{contents.desc}/config.json"
    audio = _sub(config, "audio_config", where)
    depths = _get(audio, "depths", [2, 2, 6, 2], list, where)
    heads = _get(audio, "num_attention_heads", [4, 8, 16, 32], list, where)
    width = _get(audio, "patch_embeds_hidden_size", 96, int, where, 1)
    hidden = _get(audio, "hidden_size", 768, int, where, 1)
    if len(depths) != len(heads) or hidden != width * 2 ** (len(depths) - 1):
        raise CheckpointError(
            where,
            f"audio_config contradicts itself: depths {short(depths)}, num_attention_heads {short(heads)}, "
            f"hidden_size {hidden} (HTSAT's last stage is {width} x 2^{len(depths) - 1} wide)",
        )
    fused = _get(audio, "enable_fusion", False, bool, where)
    proj = _get(config, "projection_dim", _get(audio, "projection_dim", 512, int, where, 1), int, where, 1)
    stride = audio.get("patch_stride", [4, 4])
    kwargs = {
        "depths": depths,
        "num_heads": heads,
        "patch_embed_dim": width,
        "projection_dim": proj,
        "window_size": _get(audio, "window_size", 8, int, where, 1),
        "spec_size": _get(audio, "spec_size", 256, int, where, 1),
        "num_mel_bins": _get(audio, "num_mel_bins", 64, int, where, 1),
        "patch_size": _get(audio, "patch_size", 4, int, where, 1),
        "patch_stride": list(stride) if isinstance(stride, (list, tuple)) else [stride, stride],
        "mlp_ratio": _get(audio, "mlp_ratio", 4.0, float, where, 0),
        "qkv_bias": _get(audio, "qkv_bias", True, bool, where),
        "layer_norm_eps": _get(audio, "layer_norm_eps", 1e-5, float, where, 0),
        "fused": fused,
        "fusion_type": audio.get("fusion_type") or "aff_2d",
        "aff_block_r": _get(audio, "aff_block_r", 4, int, where, 1),
        "projection_hidden_act": _get(audio, "projection_hidden_act", "relu", str, where),
        "hidden_act": _get(audio, "hidden_act", "gelu", str, where),
    }
    kwargs.update(_LAION_FRONTEND if laion else _frontend(contents, kwargs))
    size = "clap_htsat_base" if width == 128 else "clap_htsat_tiny"
    kind = "LAION-CLAP release" if laion else "Hugging Face CLAP"
    return Arch(size, kwargs, None, kind=kind, fresh_head=True)


def _frontend(contents: Contents, kwargs: dict) -> dict:
    """Front-end kwargs of the feature extractor's config, checked against the model's."""
    fe = feature_config(contents)
    where = f"{contents.desc} (feature extractor config)"
    mels = _get(fe, "feature_size", 64, int, where, 1)
    if mels != kwargs["num_mel_bins"]:
        raise CheckpointError(
            where, f"feature_size {mels} contradicts audio_config num_mel_bins {kwargs['num_mel_bins']}"
        )
    truncation = _get(fe, "truncation", "fusion", str, where)
    if (truncation == "fusion") != kwargs["fused"]:
        raise CheckpointError(
            where,
            f"truncation {truncation!r} does not fit a model with enable_fusion={kwargs['fused']} "
            "(the fused feature path is truncation 'fusion')",
        )
    padding = _get(fe, "padding", "repeatpad", str, where)
    if padding != "repeatpad":
        raise CheckpointError(where, f"padding {padding!r} is not supported (CLAP's is 'repeatpad')")
    rate = _get(fe, "sampling_rate", 48000, int, where, 1, 384000)
    n_fft = _get(fe, "fft_window_size", 1024, int, where, 2)
    return {
        "sample_rate": rate,
        "clip_seconds": _get(fe, "max_length_s", 10, float, where, 0.01, 3600),
        "n_fft": n_fft,
        "hop_length": _get(fe, "hop_length", 480, int, where, 1, n_fft),
        "f_min": _get(fe, "frequency_min", 0, float, where, 0, rate / 2),
        "f_max": _get(fe, "frequency_max", 14000, float, where, 0, rate / 2),
    }


def _adapt(state: dict[str, torch.Tensor], model, arch: Arch, **_options) -> list[str]:
    """The Swin blocks' ``relative_position_index`` a LAION release's mapping leaves out (a buffer derived
    from the window size): the built model's own."""
    for key, value in model.state_dict().items():
        if key.endswith("relative_position_index") and key not in state:
            state[key] = value
    return []


IMPORTER = Importer(
    family="clap",
    title="CLAP",
    what="a Hugging Face CLAP directory (config.json with model_type clap, ClapModel weights)",
    claims=_claims,
    arch_from=_arch,
    map_keys=_map_keys,
    adapt=_adapt,
    head="head.",
    audioset=False,
    source_key=lambda k, c: k.removeprefix(_TOWER),
)


# ---------------------------------------------------------------------- the text tower
def logit_scale(contents: Contents) -> float:
    """``exp(logit_scale_a)``: the scale of ``ClapModel``'s ``logits_per_audio``."""
    value = contents.state.get("logit_scale_a")
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not math.isfinite(float(value)):
        raise CheckpointError(contents.desc, "has no finite logit_scale_a (the audio-text logit scale)")
    scale = math.exp(float(value))
    if not 0 < scale < math.inf:
        raise CheckpointError(contents.desc, f"logit_scale_a {float(value):g} gives no usable scale")
    return scale


def _tokenizer(directory: Path | None, desc: str):
    if directory is None:
        raise CheckpointError(desc, "has no tokenizer (a CLAP directory or hub id carries one)")
    if not (directory / "tokenizer.json").is_file() and not all(
        (directory / f).is_file() for f in ("vocab.json", "merges.txt")
    ):
        missing = [f for f in ("vocab.json", "merges.txt") if not (directory / f).is_file()]
        raise CheckpointError(
            desc,
            f"has no tokenizer: tokenizer.json, or vocab.json and merges.txt ({', '.join(missing)} missing)",
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as err:  # noqa: BLE001 - a broken tokenizer file is the checkpoint's fault: one line
        raise CheckpointError(desc, f"cannot load its tokenizer ({one_line(err, 160)})") from None


class ClapText:
    """CLAP's text side: tokenizer, text tower and projection. :meth:`encode` gives the L2-normalised text
    embeddings ``ClapModel.get_text_features`` gives; ``scale`` is ``exp(logit_scale_a)``."""

    def __init__(self, contents: Contents):
        from transformers import ClapTextConfig, ClapTextModelWithProjection

        where = f"{contents.desc}/config.json"
        if contents.config is None:
            raise CheckpointError(contents.desc, "is not a CLAP directory (no config.json)")
        text = dict(_sub(contents.config, "text_config", where))
        text["projection_dim"] = contents.config.get("projection_dim", text.get("projection_dim", 512))
        self.tokenizer = _tokenizer(contents.directory, contents.desc)
        try:
            model = ClapTextModelWithProjection(ClapTextConfig(**text)).eval()
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                where, f"text_config cannot build the text tower ({one_line(err, 160)})"
            ) from None
        state = {k: v for k, v in contents.state.items() if str(k).startswith(_TEXT)}
        mine = model.state_dict()
        bad = [k for k in state if k in mine and tuple(state[k].shape) != tuple(mine[k].shape)]
        if bad:
            raise CheckpointError(
                contents.desc,
                f"text weights do not fit its config: {bad[0]} is {tuple(state[bad[0]].shape)}, "
                f"the config makes {tuple(mine[bad[0]].shape)}",
            )
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise CheckpointError(
                contents.desc, f"text weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        if len(self.tokenizer) > text.get("vocab_size", 50265):
            raise CheckpointError(
                contents.desc,
                f"its tokenizer has {len(self.tokenizer)} tokens, the text tower {text.get('vocab_size')}",
            )
        self.model, self.scale, self.desc = model, logit_scale(contents), contents.desc
        #: the longest prompt in tokens (longer ones are cut): RoBERTa's positions start after the padding id
        self.max_tokens = min(int(self.tokenizer.model_max_length), model.config.max_position_embeddings - 2)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, projection_dim]`` (float32, CPU) of ``texts``."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(
                list(texts[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            emb = self.model(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            ).text_embeds
            out.append(torch.nn.functional.normalize(emb.float(), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.model.config.projection_dim)


def text_encoder(contents: Contents) -> ClapText:
    """The :class:`ClapText` of resolved CLAP ``contents``; a one-line CheckpointError for anything else."""
    if not _claims(contents):
        raise CheckpointError(
            contents.desc, "is not a CLAP checkpoint: text labels need a CLAP model (clap-*)"
        )
    return ClapText(contents)
