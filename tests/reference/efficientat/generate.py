"""Reference fixtures for EfficientAT, produced by the original code (github.com/fschmid56/EfficientAT).

Usage (from the sed repository root)::

    python tests/reference/efficientat/generate.py --ref /work/refs/EfficientAT

``--ref`` is a work tree of the reference repository at the commit named in this folder's README.
The script builds the reference's ``get_model(width_mult=0.4, num_classes=527, head_type="mlp")``,
fills it from a manifest of random tensors (``tests.reference.common``), saves the bare state dict as
the release file ``mn04_as_mAP_432.pt`` into a temporary ``model_dir`` and loads it back through the
reference's own ``get_model(pretrained_name="mn04_as", ...)`` (``torch.hub.load_state_dict_from_url``
finds the file already there and loads it), then runs ``inference.py``'s path on ``common.signal``
inputs: the wave read back with ``librosa.load(sr=32000, mono=True)``, ``AugmentMelSTFT`` (eval) and
the model, each clip at its own length. Writes ``outputs.npz`` and ``weights.json`` next to itself.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the sed repository root, for tests.reference.common
from tests.reference import common  # noqa: E402

RATE = 32000
WIDTH = 0.4
NUM_CLASSES = 527
PRETRAINED_NAME = "mn04_as"  # the reference's name of the release file below
RELEASE_FILE = "mn04_as_mAP_432.pt"
SEED = 20240501
MEL_REGIMES = ("1s", "3s")  # regimes whose front-end output is recorded too
#: inference.py's defaults
MEL_ARGS = {"n_mels": 128, "sr": RATE, "win_length": 800, "hopsize": 320}


def manifest_entries(state: dict[str, torch.Tensor]) -> list[dict]:
    """Key, shape and fill of every tensor of the reference state dict (in its order). Fills keep the
    activations of a random 17-layer network in a useful range: He-scaled convs, BN weights ~1,
    positive running variances, 1/sqrt(fan_in) linears."""
    entries = []
    for key, t in state.items():
        shape = tuple(t.shape)
        if not t.dtype.is_floating_point:  # num_batches_tracked
            entries.append(common.manifest_entry(key, shape, str(t.dtype).replace("torch.", "")))
        elif key.endswith("running_var"):
            entries.append(common.manifest_entry(key, shape, mean=1.0, std=0.2, positive=True))
        elif key.endswith("running_mean"):
            entries.append(common.manifest_entry(key, shape, mean=0.0, std=0.1))
        elif t.dim() == 4:  # conv, no bias
            fan_in = shape[1] * shape[2] * shape[3]
            entries.append(common.manifest_entry(key, shape, std=math.sqrt(2.0 / fan_in)))
        elif t.dim() == 2:  # linear weight
            entries.append(common.manifest_entry(key, shape, std=1.0 / math.sqrt(shape[1])))
        elif key.endswith("weight"):  # BN weight
            entries.append(common.manifest_entry(key, shape, mean=1.0, std=0.1))
        else:  # BN and linear biases
            entries.append(common.manifest_entry(key, shape, std=0.1))
    return entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="work tree of github.com/fschmid56/EfficientAT")
    ap.add_argument("--out", default=str(HERE), help="folder for outputs.npz and weights.json")
    args = ap.parse_args()
    ref = Path(args.ref).resolve()
    out = Path(args.out).resolve()
    torch.manual_seed(0)

    sys.path.insert(0, str(ref))
    os.chdir(ref)  # helpers/utils.py reads metadata/class_labels_indices.csv relative to the cwd
    import models.mn.model as mn_model
    from models.mn.model import get_model
    from models.preprocess import AugmentMelSTFT

    ref_args = {"width_mult": WIDTH, "num_classes": NUM_CLASSES, "head_type": "mlp"}
    with contextlib.redirect_stdout(io.StringIO()):  # get_model prints the whole model
        skeleton = get_model(**ref_args)
    entries = manifest_entries(skeleton.state_dict())
    manifest = {"seed": SEED, "tensors": entries}
    tensors = common.tensors_from(manifest)

    with tempfile.TemporaryDirectory() as tmp:
        # the release layout: a bare state dict under the release file name
        torch.save(tensors, Path(tmp) / RELEASE_FILE)
        # load it back exactly as the reference does: get_model(pretrained_name=...) ->
        # load_state_dict_from_url(url, model_dir=model_dir) finds the file in model_dir
        mn_model.model_dir = tmp
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            model = get_model(pretrained_name=PRETRAINED_NAME, **ref_args)
        if "non-strict" in log.getvalue() or "Dropping" in log.getvalue():
            raise SystemExit(
                "the reference did not load the release file strictly:\n" + log.getvalue()[-2000:]
            )
        loaded = model.state_dict()
        assert list(loaded) == list(tensors), "key order/set differs from the manifest"
        for k, v in tensors.items():
            assert torch.equal(loaded[k], v), k
        model.eval()

        mel = AugmentMelSTFT(**MEL_ARGS)
        mel.eval()

        def read_back(wave: np.ndarray, name: str) -> torch.Tensor:
            """inference.py's reading: the clip as a file, librosa at 32 kHz, mono."""
            path = Path(tmp) / f"{name}.wav"
            sf.write(path, wave.T, RATE, subtype="FLOAT")
            (waveform, _) = librosa.core.load(str(path), sr=RATE, mono=True)
            assert np.array_equal(waveform, wave.mean(0)), "librosa changed the samples"
            return torch.from_numpy(waveform[None, :])

        def run(waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """inference.py: spec = mel(waveform); preds, features = model(spec.unsqueeze(0)); batched
            like ex_audioset.py's _mel_forward ([B, T] -> mel [B, 128, F] -> [B, 1, 128, F])."""
            with torch.no_grad():
                spec = mel(waveform)
                preds, features = model(spec.unsqueeze(1))
            return preds, features, spec

        results: dict[str, np.ndarray] = {}

        def record(regime: str, preds, features, spec=None) -> None:
            results[f"logits_{regime}"] = preds.float().numpy()
            results[f"embedding_{regime}"] = features.float().numpy()
            if spec is not None and regime in MEL_REGIMES:
                results[f"mel_{regime}"] = spec.float().numpy()

        for seconds in common.LENGTHS:
            regime = f"{seconds:g}s"
            preds, features, spec = run(read_back(common.signal(seconds, RATE, 0), regime))
            record(regime, preds, features, spec)
        batch = torch.cat([read_back(common.signal(3.0, RATE, s), f"batch{s}") for s in (1, 2, 3)])
        record("batch", *run(batch)[:2])
        alone = [
            run(read_back(common.signal(sec, RATE, 4 + i), f"mixed{i}")) for i, sec in enumerate(common.MIXED)
        ]
        record("mixed", torch.cat([a[0] for a in alone]), torch.cat([a[1] for a in alone]))

    for k, v in results.items():
        print(f"{k:20s} {str(v.shape):18s} range [{v.min():.4g}, {v.max():.4g}] std {v.std():.4g}")
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "outputs.npz", **{k: v.astype(np.float32) for k, v in results.items()})
    common.save_manifest(
        out / "weights.json",
        SEED,
        entries,
        release_file=RELEASE_FILE,
        release_layout="bare state_dict of models.mn.model.MN (torch.save), no other fields",
        reference_get_model={"pretrained_name": PRETRAINED_NAME, **ref_args},
        reference_mel=MEL_ARGS,
        sample_rate=RATE,
        regimes={
            "single": [f"{s:g}s" for s in common.LENGTHS],
            "single_seed": 0,
            "batch": {"seconds": 3.0, "seeds": [1, 2, 3]},
            "mixed": {"seconds": list(common.MIXED), "seeds": [4, 5, 6], "run": "each clip alone"},
            "mel": list(MEL_REGIMES),
        },
    )
    print(f"wrote {out / 'outputs.npz'} ({(out / 'outputs.npz').stat().st_size} bytes) and weights.json")


if __name__ == "__main__":
    main()
