"""Reference fixtures for CED, produced by the ORIGINAL code (github.com/RicherMans/CED).

Usage (see README.md for the environment)::

    /work/venvs/ced/bin/python tests/reference/ced/generate.py --ref /work/refs/CED

Builds the reference ``AudioTransformer`` through its own entry point ``models.ced_mini`` (small:
64 wide, 2 blocks, 2 heads, 527 classes, 1012-frame chunks, mean pooling), fills it from a manifest
(``tests.reference.common``), saves the bare state dict with ``torch.save`` as the released ``.pt``
files are, loads it back through ``ced_mini(pretrained=True, pretrained_url=<file>)`` (that is
``models/checkpoints.py`` ``build_mdl``: ``torch.load``, optional ``'model'`` key,
``load_state_dict(strict=False)``), and records the reference's outputs on ``common.signal`` inputs.
This script imports the reference from ``--ref`` and never imports sed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchaudio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository root, for tests.reference.common

from tests.reference import common  # noqa: E402

SEED = 20230822
RATE = 16000
HOP = 160
TARGET = 1012
#: the reference model (keyword arguments of models.ced_mini, which override its released size)
MODEL_KWARGS = {
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 4,
    "patch_size": 16,
    "num_classes": 527,
}
#: front-end buffers the released files carry; they are torchaudio's, not random
FRONT_END = {
    "front_end.0.spectrogram.window": "torch.hann_window(512)",
    "front_end.0.mel_scale.fb": (
        "torchaudio.functional.melscale_fbanks(257, 0.0, 8000.0, 64, 16000, None, 'htk')"
    ),
}
#: an input of exactly 2 x 1012 frames (centred STFT: 2023 hops + 1)
EXACT2X_SAMPLES = (2 * TARGET - 1) * HOP


def front_end_buffers() -> dict[str, torch.Tensor]:
    return {
        "front_end.0.spectrogram.window": torch.hann_window(512),
        "front_end.0.mel_scale.fb": torchaudio.functional.melscale_fbanks(
            257, 0.0, 8000.0, 64, 16000, None, "htk"
        ),
    }


def fill_rule(key: str, shape) -> dict:
    """Manifest entry of one reference tensor: norms around 1, BN statistics of the dB spectrogram,
    weights large enough that every block, position and the head move the output."""
    if key.endswith("num_batches_tracked"):
        return common.manifest_entry(key, shape, "int64")
    if key == "init_bn.1.running_mean":
        return common.manifest_entry(key, shape, mean=3.0, std=3.0)
    if key == "init_bn.1.running_var":
        return common.manifest_entry(key, shape, mean=30.0, std=20.0, positive=True)
    norm = key.startswith(("init_bn.", "norm.", "outputlayer.0.")) or ".norm1." in key or ".norm2." in key
    if norm:
        return common.manifest_entry(key, shape, mean=1.0 if key.endswith("weight") else 0.0, std=0.1)
    if key in ("time_pos_embed", "freq_pos_embed"):
        return common.manifest_entry(key, shape, std=0.2)
    if key == "patch_embed.proj.weight":
        return common.manifest_entry(key, shape, std=0.05)
    if key.startswith("outputlayer.1."):
        return common.manifest_entry(key, shape, std=0.1)
    if key.endswith("weight"):
        return common.manifest_entry(key, shape, std=0.1)
    return common.manifest_entry(key, shape, std=0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", required=True, type=Path, help="work tree of github.com/RicherMans/CED")
    parser.add_argument("--out", type=Path, default=HERE, help="where outputs.npz and weights.json go")
    args = parser.parse_args()
    sys.path.insert(0, str(args.ref.resolve()))
    import models  # the reference package (models/__init__.py)

    torch.manual_seed(0)

    # ---- manifest from the reference model's own state dict (front-end buffers excepted)
    template = models.ced_mini(pretrained=False, **MODEL_KWARGS)
    entries = [fill_rule(k, v.shape) for k, v in template.state_dict().items() if k not in FRONT_END]
    manifest = {"seed": SEED, "tensors": entries}
    weights = common.tensors_from(manifest)
    buffers = front_end_buffers()
    release = {
        k: buffers[k] if k in FRONT_END else weights[k]  # the reference's key order, front end included
        for k in template.state_dict()
    }
    for k in FRONT_END:
        assert torch.equal(template.state_dict()[k], buffers[k]), (
            f"front-end buffer {k} differs from {FRONT_END[k]}"
        )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audiotransformer_small_test.pt"
        torch.save(release, path)  # the released files: a bare state dict
        model = models.ced_mini(pretrained=True, pretrained_url=str(path), **MODEL_KWARGS)
    model.eval()
    state = model.state_dict()
    assert list(state) == list(release), "the release layout does not name every reference tensor"
    for k, v in release.items():
        assert torch.equal(state[k], v), f"{k} was not loaded from the release file"

    logits_seen: list[torch.Tensor] = []
    model.outputlayer.register_forward_hook(lambda _m, _i, out: logits_seen.append(out.detach().clone()))

    def run(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference inference ``model(wave [B, T])`` -> (probabilities, outputlayer outputs of the call)."""
        logits_seen.clear()
        with torch.no_grad():
            probs = model(torch.from_numpy(wave))
        assert len(logits_seen) == 1
        return probs.numpy(), logits_seen[0].numpy()

    out: dict[str, np.ndarray] = {}
    for seconds in common.LENGTHS:
        wave = common.signal(seconds, RATE, 0)  # [1, T]
        frames = 1 + wave.shape[-1] // HOP
        probs, logits = run(wave)
        out[f"single_{seconds:g}s_probs"] = probs
        if frames <= TARGET:  # one chunk: the hook saw the clip's own logits
            out[f"single_{seconds:g}s_logits"] = logits
        print(f"{seconds:g} s: {frames} frames, {logits.shape[0]} chunk(s)")

    batch = np.concatenate([common.signal(3.0, RATE, s) for s in (1, 2, 3)])  # [3, T], one batch
    out["batch_probs"], out["batch_logits"] = run(batch)

    mixed = [
        run(common.signal(seconds, RATE, seed)) for seconds, seed in zip(common.MIXED, (4, 5, 6))
    ]  # alone
    out["mixed_probs"] = np.concatenate([p for p, _ in mixed])
    out["mixed_logits"] = np.concatenate([g for _, g in mixed])

    # ---- exactly 2 x 1012 frames: forward_spectrogram's `else: splits = torch.stack(splits[:-1])`
    wave = common.signal(EXACT2X_SAMPLES / RATE, RATE, 0)
    assert wave.shape[-1] == EXACT2X_SAMPLES
    quirk, chunk_logits = run(wave)
    with torch.no_grad():
        spec = model.front_end(torch.from_numpy(wave))  # [1, 64, 2024]
        assert spec.shape[-1] == 2 * TARGET
        chunks = [model.forward_spectrogram(c) for c in spec.split(TARGET, -1)]
    correct = torch.stack(chunks).mean(0).numpy()
    assert chunk_logits.shape[0] == 1, "the reference ran more than one chunk"
    assert np.allclose(quirk, chunks[0].numpy(), rtol=0, atol=1e-6), "the quirk is not 'first chunk only'"
    out["exact2x_quirk_probs"], out["exact2x_probs"] = quirk, correct
    print(f"exact 2 x {TARGET} frames: quirk vs correct {common.max_rel_diff(quirk, correct):.3g} of range")

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "outputs.npz", **{k: v.astype(np.float32) for k, v in out.items()})
    common.save_manifest(
        args.out / "weights.json",
        SEED,
        entries,
        release={
            "format": "torch.save(bare state dict), loaded by models/checkpoints.py build_mdl",
            "front_end_buffers": FRONT_END,
        },
        reference_model={
            "entry": "models.ced_mini",
            "kwargs": MODEL_KWARGS,
            "defaults": {
                "target_length": TARGET,
                "pooling": "mean",
                "eval_avg": "mean",
                "pad_last": True,
                "n_mels": 64,
                "hop_size": 160,
                "f_max": 8000,
            },
        },
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
