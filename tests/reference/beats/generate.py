"""Reference fixtures for BEATs: outputs of microsoft/unilm ``beats/`` (the original code) on a micro model.

Usage (from anywhere; ``--ref`` is an extracted unilm checkout, or its ``beats/`` folder)::

    python tests/reference/beats/generate.py --ref /work/refs/unilm

What it does: builds the reference ``BEATs(BEATsConfig(CFG))`` only to list its state_dict keys and shapes,
writes a manifest (one fill rule per tensor), makes the tensors with :mod:`tests.reference.common`, saves a
release-layout file ``{"cfg", "model", "label_dict"}`` to a temporary directory and loads it back the way the
BEATs README does (``torch.load``; ``BEATsConfig(checkpoint['cfg'])``; ``BEATs(cfg)``;
``load_state_dict(checkpoint['model'])``; ``eval()``), then runs ``extract_features(wave, padding_mask=None)``
on the :func:`common.signal` inputs of every regime, each clip at its own length. A forward hook on the
reference's ``predictor`` records the clip logits (the mean of its per-token output over tokens, which is what
``extract_features`` takes the sigmoid of when there is no padding) and the pooled embedding (the mean of its
input). Writes ``outputs.npz`` and ``weights.json`` next to this file (or to ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from tests.reference import common  # noqa: E402

HERE = Path(__file__).resolve().parent
REFERENCE = {
    "repository": "https://github.com/microsoft/unilm",
    "folder": "beats",
    "commit": "768a3c873f598bb9b4d4dfb9267b099e35f8fe56",
}
SEED = 1234  # manifest seed
LABEL_SEED = 527  # seed of the permutation of the AudioSet mids over the predictor rows
RATE = 16000

#: the release cfg: every BEATsConfig field (the reference's defaults), a micro architecture over them
CFG = {
    "input_patch_size": 16,
    "embed_dim": 32,
    "conv_bias": False,
    "encoder_layers": 2,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 2,
    "activation_fn": "gelu",
    "layer_wise_gradient_decay_ratio": 1.0,
    "layer_norm_first": False,
    "deep_norm": True,
    "dropout": 0.1,
    "attention_dropout": 0.1,
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
    "predictor_dropout": 0.1,
    "predictor_class": 527,
}

#: keys a release state_dict holds twice: the reference shares layer 0's relative-position table with the
#: other layers (one Parameter, saved under every layer's name); the manifest holds it once
SHARED = {
    f"encoder.layers.{i}.self_attn.relative_attention_bias.weight": (
        "encoder.layers.0.self_attn.relative_attention_bias.weight"
    )
    for i in range(1, CFG["encoder_layers"])
}


def fill(key: str, shape: tuple[int, ...]) -> dict:
    """The manifest entry of one reference tensor: weights ~ 1/sqrt(fan_in) so that signals keep their scale,
    norm weights around 1, biases small but not zero, the weight-norm gain positive."""
    name = key.rsplit(".", 1)[-1]
    if "layer_norm" in key:  # layer_norm, encoder.layer_norm, self_attn_layer_norm, final_layer_norm
        return common.manifest_entry(key, shape, mean=1.0 if name == "weight" else 0.0, std=0.1)
    if key.endswith("pos_conv.0.weight_g"):
        return common.manifest_entry(key, shape, mean=0.5, std=0.5, positive=True)
    if key.endswith("pos_conv.0.weight_v"):
        return common.manifest_entry(key, shape, std=1.0)  # only its direction counts
    if key.endswith("relative_attention_bias.weight"):
        return common.manifest_entry(key, shape, std=0.5)
    if key.endswith("grep_a"):
        return common.manifest_entry(key, shape, mean=1.0, std=0.2)
    if name == "bias":
        return common.manifest_entry(key, shape, std=0.1)
    fan_in = int(np.prod(shape[1:]))
    return common.manifest_entry(key, shape, std=1.0 / math.sqrt(fan_in))


def audioset_mids() -> list[str]:
    """The 527 AudioSet mids of sed's label table (read as data, file order)."""
    with open(ROOT / "sed" / "data" / "corpora" / "audioset_labels.csv", newline="", encoding="utf-8") as f:
        return [row["mid"] for row in csv.DictReader(f)]


def label_dict_of(mids: list[str]) -> dict[int, str]:
    """The release ``label_dict`` {predictor row: mid}: a fixed random permutation of the mids."""
    perm = np.random.default_rng(LABEL_SEED).permutation(len(mids))
    return {r: mids[int(perm[r])] for r in range(len(mids))}


def release_state(tensors: dict[str, torch.Tensor], shared: dict[str, str]) -> dict[str, torch.Tensor]:
    """The release ``model`` state_dict: the manifest's tensors, each shared one under every name."""
    state = dict(tensors)
    for alias, key in shared.items():
        state[alias] = tensors[key]
    return state


def regimes() -> dict[str, list[np.ndarray]]:
    """Regime name -> the mono clips ``[T]`` it runs (single clips, the 3-clip batch, the mixed clips)."""
    out = {f"single_{s:g}s": [common.signal(s, RATE, 0)[0]] for s in common.LENGTHS}
    out["batch_3s"] = [common.signal(3.0, RATE, seed)[0] for seed in (1, 2, 3)]
    out["mixed"] = [common.signal(s, RATE, seed)[0] for s, seed in zip(common.MIXED, (4, 5, 6))]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", required=True, type=Path, help="unilm checkout (or its beats/ folder)")
    parser.add_argument("--out", type=Path, default=HERE, help="where outputs.npz and weights.json go")
    args = parser.parse_args()
    ref = args.ref.resolve()
    if (ref / "beats" / "BEATs.py").is_file():
        ref = ref / "beats"
    sys.path.insert(0, str(ref))
    from BEATs import BEATs, BEATsConfig  # the reference (BEATs.py, backbone.py, modules.py)

    # ---------------------------------------------------------------- manifest and the release file
    template = BEATs(BEATsConfig(CFG))
    entries = [fill(k, tuple(v.shape)) for k, v in template.state_dict().items() if k not in SHARED]
    label_dict = label_dict_of(audioset_mids())
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = common.save_manifest(
        args.out / "weights.json",
        SEED,
        entries,
        cfg=CFG,
        shared=SHARED,
        label_dict={str(r): m for r, m in label_dict.items()},  # JSON keys are strings; int rows in the file
        reference=REFERENCE,
    )
    tensors = common.tensors_from(manifest)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "BEATs_micro_finetuned.pt"
        torch.save(
            {"cfg": dict(CFG), "model": release_state(tensors, SHARED), "label_dict": label_dict}, path
        )
        # exactly the BEATs README ("Load Fine-tuned Models")
        checkpoint = torch.load(path)
        cfg = BEATsConfig(checkpoint["cfg"])
        BEATs_model = BEATs(cfg)
        BEATs_model.load_state_dict(checkpoint["model"])
        BEATs_model.eval()
    loaded = BEATs_model.state_dict()
    for key, value in release_state(tensors, SHARED).items():
        assert torch.equal(loaded[key], value), key
    assert all(checkpoint["label_dict"][r] == label_dict[r] for r in range(CFG["predictor_class"]))

    # ---------------------------------------------------------------- the reference on every regime
    captured: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):  # per-token predictor input/output [B, N, *]: mean over tokens
        captured["pooled"] = inputs[0].mean(dim=1)
        captured["logits"] = output.mean(dim=1)
        captured["tokens"] = torch.tensor(output.shape[1])

    BEATs_model.predictor.register_forward_hook(hook)

    def run(clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
        wave = torch.from_numpy(np.stack(clips))
        with torch.no_grad():
            probs, _ = BEATs_model.extract_features(wave, padding_mask=None)
        return {"probs": probs, **captured}

    outputs: dict[str, np.ndarray] = {}
    print(f"{'regime':<12} {'samples':>8} {'tokens':>6}  |probs - sigmoid(hook logits)|")
    for name, clips in regimes().items():
        # the reference cannot batch different lengths: each mixed clip runs alone
        runs = [run([c]) for c in clips] if name == "mixed" else [run(clips)]
        for what in ("logits", "probs", "pooled"):
            outputs[f"{name}/{what}"] = torch.cat([r[what] for r in runs]).numpy().astype(np.float32)
        outputs[f"{name}/samples"] = np.array([len(c) for c in clips], np.int64)
        gap = float(
            (
                torch.sigmoid(torch.from_numpy(outputs[f"{name}/logits"]))
                - torch.from_numpy(outputs[f"{name}/probs"])
            )
            .abs()
            .max()
        )
        print(
            f"{name:<12} {str([len(c) for c in clips]):>8} "
            f"{str([int(r['tokens']) for r in runs]):>6}  {gap:.2e}"
        )
    np.savez_compressed(args.out / "outputs.npz", **outputs)

    # ---------------------------------------------------------------- README only: the padded mixed batch
    clips = regimes()["mixed"]
    n = max(len(c) for c in clips)
    wave = torch.zeros(len(clips), n)
    padding_mask = torch.ones(len(clips), n, dtype=torch.bool)
    for i, c in enumerate(clips):
        wave[i, : len(c)] = torch.from_numpy(c)
        padding_mask[i, : len(c)] = False
    with torch.no_grad():
        probs, token_mask = BEATs_model.extract_features(wave, padding_mask=padding_mask)
    alone_p = outputs["mixed/probs"]
    alone_l = outputs["mixed/logits"]
    padded_l = torch.logit(probs.double()).numpy()
    print("padded mixed batch (padding_mask) vs each clip alone, fraction of the alone output's range:")
    for i, c in enumerate(clips):
        dp = common.max_rel_diff(probs[i], alone_p[i])
        dl = common.max_rel_diff(padded_l[i], alone_l[i])
        print(
            f"  clip {i} ({len(c) / RATE:g} s, {int((~token_mask[i]).sum())} valid tokens): "
            f"probs {dp:.3g}, logits {dl:.3g}"
        )


if __name__ == "__main__":
    main()
