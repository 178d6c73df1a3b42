"""Reference fixtures for the Hugging Face port of CED, produced by the port's own code
(github.com/jimbozhang/hf_transformers_custom_model_ced, the code behind the hub repos mispeech/ced-*).

Usage (see README.md for the environment: transformers 4.35.2, as the port pins)::

    /work/venvs/ced_hf/bin/python tests/reference/ced_hf/generate.py --ref /work/refs/ced_hf

Builds a small ``CedForAudioClassification`` (64 wide, 2 blocks, 2 heads, 527 classes, 1012-frame
chunks, mean pooling), fills it from a manifest (``tests.reference.common``), writes the release layout
with ``save_pretrained`` (``config.json`` + ``model.safetensors``, and the ``CedFeatureExtractor`` as the
port's conversion script saves it), loads both back with ``from_pretrained`` and records the port's
outputs on ``common.signal`` inputs: ``feature_extractor(wave [B, T], sampling_rate=16000,
return_tensors="pt")`` then ``model(**inputs).logits`` (which, with mean pooling, are SIGMOID
probabilities) and the pre-sigmoid outputs of ``outputlayer`` (a forward hook).
This script imports the port from ``--ref`` and never imports sed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))  # the repository root, for tests.reference.common

from tests.reference import common  # noqa: E402

SEED = 20231124
RATE = 16000
HOP = 160
TARGET = 1012
CONFIG_KWARGS = {
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 4.0,
    "outputdim": 527,
    "patch_size": 16,
    "patch_stride": 16,
    "pooling": "mean",
    "target_length": TARGET,
}
#: the AudioSet class table CedConfig fetches from the hub (topel/ConvNeXt-Tiny-AT) for 527 outputs;
#: offline, the same public table (index,mid,display_name) shipped in this repository is handed to it
LABELS_CSV = ROOT / "sed" / "data" / "corpora" / "audioset_labels.csv"
EXACT2X_SAMPLES = (2 * TARGET - 1) * HOP


def fill_rule(key: str, shape) -> dict:
    """Manifest entry of one port tensor (same rules as tests/reference/ced, on the port's key names)."""
    k = key.removeprefix("encoder.")
    if k.endswith("num_batches_tracked"):
        return common.manifest_entry(key, shape, "int64")
    if k == "init_bn.running_mean":
        return common.manifest_entry(key, shape, mean=3.0, std=3.0)
    if k == "init_bn.running_var":
        return common.manifest_entry(key, shape, mean=30.0, std=20.0, positive=True)
    if k.startswith(("init_bn.", "norm.", "outputlayer.0.")) or ".norm1." in k or ".norm2." in k:
        return common.manifest_entry(key, shape, mean=1.0 if k.endswith("weight") else 0.0, std=0.1)
    if k in ("time_pos_embed", "freq_pos_embed"):
        return common.manifest_entry(key, shape, std=0.2)
    if k == "patch_embed.proj.weight":
        return common.manifest_entry(key, shape, std=0.05)
    if k.startswith("outputlayer.1.") or k.endswith("weight"):
        return common.manifest_entry(key, shape, std=0.1)
    return common.manifest_entry(key, shape, std=0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ref", required=True, type=Path, help="work tree of jimbozhang/hf_transformers_custom_model_ced"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where outputs.npz and weights.json go")
    args = parser.parse_args()
    sys.path.insert(0, str(args.ref.resolve()))
    import transformers
    from ced_model import configuration_ced
    from ced_model.configuration_ced import CedConfig
    from ced_model.feature_extraction_ced import CedFeatureExtractor
    from ced_model.modeling_ced import CedForAudioClassification

    real_cached_file = configuration_ced.cached_file

    def offline_cached_file(repo, filename, *a, **kw):  # shim: the label table only, no numbers involved
        if (repo, filename) == ("topel/ConvNeXt-Tiny-AT", "class_labels_indices.csv"):
            return str(LABELS_CSV)
        return real_cached_file(repo, filename, *a, **kw)

    configuration_ced.cached_file = offline_cached_file
    torch.manual_seed(0)

    template = CedForAudioClassification(CedConfig(**CONFIG_KWARGS))
    entries = [fill_rule(k, v.shape) for k, v in template.state_dict().items()]
    manifest = {"seed": SEED, "tensors": entries}
    weights = common.tensors_from(manifest)
    missing, unexpected = template.load_state_dict(weights, strict=True)
    assert not missing and not unexpected

    with tempfile.TemporaryDirectory() as tmp:
        template.save_pretrained(tmp)  # the release layout: config.json + model.safetensors
        CedFeatureExtractor(return_attention_mask=False).save_pretrained(
            tmp
        )  # as convert_ced_original_to_pytorch.py
        files = sorted(p.name for p in Path(tmp).iterdir())
        assert {"config.json", "model.safetensors"} <= set(files), files
        config_json = json.loads((Path(tmp) / "config.json").read_text())
        preprocessor_json = json.loads((Path(tmp) / "preprocessor_config.json").read_text())
        model = CedForAudioClassification.from_pretrained(tmp)
        fe = CedFeatureExtractor.from_pretrained(tmp)
    model.eval()
    state = model.state_dict()
    assert list(state) == list(weights)
    for k, v in weights.items():
        assert torch.equal(state[k], v), f"{k} was not loaded from the release directory"
    print("release directory:", files)

    logits_seen: list[torch.Tensor] = []
    model.outputlayer.register_forward_hook(lambda _m, _i, out: logits_seen.append(out.detach().clone()))

    def run(x) -> tuple[np.ndarray, np.ndarray, int]:
        """The port's inference: feature extractor, then the model -> (probabilities, pre-sigmoid, frames)."""
        logits_seen.clear()
        inputs = fe(x, sampling_rate=RATE, return_tensors="pt")
        with torch.no_grad():
            probs = model(**inputs).logits  # sigmoid outputs (forward_head, pooling "mean")
        assert len(logits_seen) == 1
        return probs.numpy(), logits_seen[0].numpy(), inputs["input_values"].shape[-1]

    out: dict[str, np.ndarray] = {}
    for seconds in common.LENGTHS:
        probs, logits, frames = run(torch.from_numpy(common.signal(seconds, RATE, 0)))  # [1, T]
        out[f"single_{seconds:g}s_probs"], out[f"single_{seconds:g}s_logits"] = probs, logits
        assert np.allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-6)
        print(f"{seconds:g} s: {frames} frames")

    batch = np.concatenate([common.signal(3.0, RATE, s) for s in (1, 2, 3)])
    out["batch_probs"], out["batch_logits"], _ = run(torch.from_numpy(batch))  # one [3, T] batch

    clips = [common.signal(seconds, RATE, seed)[0] for seconds, seed in zip(common.MIXED, (4, 5, 6))]
    alone = [run(torch.from_numpy(c)[None]) for c in clips]  # each clip alone
    out["mixed_probs"] = np.concatenate([p for p, _, _ in alone])
    out["mixed_logits"] = np.concatenate([g for _, g, _ in alone])
    # the port's own list batching: the feature extractor zero-pads every clip to the longest
    padded, _, frames = run([torch.from_numpy(c) for c in clips])
    out["mixed_padded_quirk_probs"] = padded
    print(
        f"mixed list batch padded to {frames} frames: differs from each clip alone by "
        f"{common.max_rel_diff(padded, out['mixed_probs']):.3g} of range"
    )

    # ---- exactly 2 x 1012 frames: CedModel.forward's `else: splits = torch.stack(splits[:-1])`
    wave = torch.from_numpy(common.signal(EXACT2X_SAMPLES / RATE, RATE, 0))
    assert wave.shape[-1] == EXACT2X_SAMPLES
    quirk, _, frames = run(wave)
    assert frames == 2 * TARGET
    with torch.no_grad():
        spec = fe(wave, sampling_rate=RATE, return_tensors="pt")["input_values"]
        hidden = [model.encoder(c).logits for c in spec.split(TARGET, -1)]  # each chunk's tokens
        first = model.forward_head(hidden[0]).numpy()
        correct = model.forward_head(torch.cat(hidden, 1)).numpy()  # the port's combination over both chunks
    assert np.allclose(quirk, first, rtol=0, atol=1e-6), "the quirk is not 'first chunk only'"
    out["exact2x_quirk_probs"], out["exact2x_probs"] = quirk, correct
    print(f"exact 2 x {TARGET} frames: quirk vs correct {common.max_rel_diff(quirk, correct):.3g} of range")

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "outputs.npz", **{k: v.astype(np.float32) for k, v in out.items()})
    common.save_manifest(
        args.out / "weights.json",
        SEED,
        entries,
        release={
            "format": (
                "save_pretrained directory: config.json + model.safetensors (+ preprocessor_config.json)"
            ),
            "transformers": transformers.__version__,
        },
        config=config_json,
        preprocessor_config=preprocessor_json,
        signals={
            "rate": RATE,
            "single_seed": 0,
            "batch": {"seconds": 3.0, "seeds": [1, 2, 3]},
            "mixed": {"seconds": list(common.MIXED), "seeds": [4, 5, 6]},
            "exact2x": {"samples": EXACT2X_SAMPLES, "seed": 0},
        },
    )
    print("wrote", args.out / "outputs.npz", sorted(out))


if __name__ == "__main__":
    main()
