"""A tiny random CLAP checkpoint in the Hugging Face layout, made on disk by transformers itself
(``ClapModel``, ``ClapFeatureExtractor``, a byte-level BPE ``RobertaTokenizer`` of 265 tokens): what
``laion/clap-htsat-*`` holds, small enough for a test. ``small=True`` shrinks the feature extractor too (16
kHz, 1-s clips, 32 mel bins) for tests that score many clips; the default keeps CLAP's own 48 kHz, 10-s,
64-bin front end."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table (the symbols a byte-level BPE vocabulary starts from)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def make_clap_dir(path, fused: bool = False, small: bool = False, seed: int = 0) -> Path:
    """Write config.json, model.safetensors, the processor and tokenizer files of a random CLAP."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    d, fused = Path(path), bool(fused)
    d.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for sym in _byte_symbols():
        vocab.setdefault(sym, len(vocab))
    merges = ["Ġ s", "o u", "n d", "Ġ a"]
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab["<mask>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = RobertaTokenizer.from_pretrained(
        str(d)
    )  # from files (transformers 5: not from a constructor)
    mels, spec = (32, 128) if small else (64, 256)
    cfg = ClapConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 37,
            "max_position_embeddings": 80,
        },
        audio_config={
            "depths": [1, 1],
            "num_attention_heads": [1, 2],
            "patch_embeds_hidden_size": 16,
            "hidden_size": 32,
            "enable_fusion": fused,
            "fusion_type": "aff_2d" if fused else None,
            "num_mel_bins": mels,
            "spec_size": spec,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = ClapModel(cfg).eval()
    with torch.no_grad():
        model.logit_scale_a.fill_(2.5)  # exp: a scale of 12.2, so that scores differ visibly
    model.save_pretrained(d)
    front = (
        {
            "sampling_rate": 16000,
            "fft_window_size": 1024,
            "hop_length": 160,
            "max_length_s": 1,
            "frequency_max": 8000,
        }
        if small
        else {}
    )
    extractor = ClapFeatureExtractor(
        feature_size=mels, truncation="fusion" if fused else "rand_trunc", frequency_min=50, **front
    )
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(d)
    return d
