"""Reference fixtures of the DCASE 2023 SELD feature front ends, made by the baseline's own code.

    python tests/reference/seld_features/generate.py --ref /work/refs/seld-dcase2023

``--ref`` is a work tree of https://github.com/sharathadavanne/seld-dcase2023 at commit
24d14c9ebe6878062dc3b68eb07dd0100722f530. Its ``parameters.get_params`` (task 1: FOA; task 4: MIC +
GCC-PHAT) configure ``cls_feature_class.FeatureClass``, and the baseline's own pipeline runs unchanged
on a small dataset written to a temp folder: ``extract_all_feature`` (per file: ``_load_audio``
(scipy int16 read, ``/ 32768 + 1e-8``), ``_spectrogram``, ``_get_mel_spectrogram``,
``_get_foa_intensity_vectors`` or ``_get_gcc``, ``np.save``), then ``preprocess_features``
(``StandardScaler.partial_fit`` over every feature file, joblib dump of the scaler, ``transform`` of
every file). The dataset is the 4-channel 24 kHz :func:`tests.reference.common.signal` clips (the
common lengths, a batch of three 3-s clips, the mixed lengths, and a 3-s clip with a quiet stretch
that falls under the log-mel ``top_db`` floor), stored as 16-bit PCM (``round(x * 32768)``), the
format of the DCASE dataset that ``_load_audio`` assumes.

The features are the baseline's ``(frames, channels * 64)`` channel-major ``.npy`` files. They are
too large to commit whole, so ``outputs.npz`` keeps, per format and clip: 4 whole frames (their
indices under ``frames``), and for every frame the mean of its log-mel block and of its spatial
block; per format the fitted scaler's ``mean_`` and ``scale_`` and the same 4 frames of the 10-s clip
normalised. ``params.json`` lists the clips and the reference's parameters.

Imports numpy, scipy, joblib, the reference and ``tests.reference.common`` (never ``sed``). Run under a
librosa older than 0.9 (README: the ``pad_mode`` question), it first restores the numpy aliases that
librosa 0.8 still uses (``np.complex``, ``np.float`` ...; removed in numpy 1.24) as the builtins they
were: a shim that changes no number.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import sys
import tempfile
from pathlib import Path

import joblib
import numpy as np
from scipy.io import wavfile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository root: tests.reference.common

from tests.reference import common  # noqa: E402

COMMIT = "24d14c9ebe6878062dc3b68eb07dd0100722f530"
RATE = 24000
#: format -> parameters.get_params task id: 1 = the defaults (FOA), 4 = "MIC + GCC + ACCDOA"
TASKS = {"foa": "1", "mic": "4"}
N_MELS = 64
#: a quiet stretch (start s, stop s, gain) in the "gap" clip: its log-mel falls below the per-file
#: top_db floor
GAP = (1.0, 1.2, 1e-3)


def clips() -> list[dict]:
    """name, seconds, seed and regime of every clip (a clip's name is its file's stem)."""
    out = [{"name": f"single_{s:g}s", "seconds": s, "seed": 0, "regime": f"{s:g}s"} for s in common.LENGTHS]
    out += [{"name": f"batch_{i}", "seconds": 3.0, "seed": 1 + i, "regime": "batch"} for i in range(3)]
    out += [
        {"name": f"mixed_{i}", "seconds": s, "seed": 4 + i, "regime": "mixed"}
        for i, s in enumerate(common.MIXED)
    ]
    out += [{"name": "gap_3s", "seconds": 3.0, "seed": 7, "regime": "gap", "gap": GAP}]
    return out


def clip_signal(clip: dict) -> np.ndarray:
    """float32 ``[4, samples]``: :func:`common.signal`, with the ``gap`` (start and stop in seconds, gain)
    of a clip that has one scaled down."""
    x = common.signal(clip["seconds"], RATE, clip["seed"], channels=4)
    if "gap" in clip:
        start, stop, gain = clip["gap"]
        x[:, int(round(start * RATE)) : int(round(stop * RATE))] *= np.float32(gain)
    return x


def pcm16(x: np.ndarray) -> np.ndarray:
    """float ``[channels, samples]`` in [-1, 1] -> int16 ``[samples, channels]`` (what a WAV holds)."""
    return np.clip(np.round(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16).T


def frame_picks(n: int) -> np.ndarray:
    """The frames kept whole: the first (the only one whose window reaches into the STFT's centre
    padding), the second, the middle one and the last."""
    return np.array([0, 1, n // 2, n - 1], np.int64)


def numpy_alias_shim() -> None:
    """librosa <= 0.8 uses ``np.complex``, ``np.float``, ``np.int``, ``np.bool`` and ``np.object``, which
    numpy 1.24 removed: put back the builtins they were aliases of (only for such a librosa)."""
    major, minor = (int(v) for v in importlib.metadata.version("librosa").split(".")[:2])
    if (major, minor) < (0, 9):
        for name, alias in (
            ("complex", complex),
            ("float", float),
            ("int", int),
            ("bool", bool),
            ("object", object),
        ):
            if name not in np.__dict__:
                setattr(np, name, alias)


def run_reference(ref: Path, fmt: str, data: Path, feats: Path) -> tuple[dict, object]:
    """The baseline's extract_all_feature + preprocess_features for ``fmt``; returns its parameters and
    the scaler it saved (reloaded with joblib, as its eval path does)."""
    import cls_feature_class
    import parameters

    with contextlib.redirect_stdout(io.StringIO()):
        params = parameters.get_params(TASKS[fmt])
        assert params["dataset"] == fmt and not params["use_salsalite"]
        params["dataset_dir"], params["feat_label_dir"] = str(data), str(feats)
        fc = cls_feature_class.FeatureClass(params)
        fc.extract_all_feature()
        fc.preprocess_features()
        scaler = joblib.load(fc.get_normalized_wts_file())
    return params, scaler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=Path, required=True, help="work tree of sharathadavanne/seld-dcase2023")
    ap.add_argument("--out", type=Path, default=HERE, help="where outputs.npz and params.json go")
    args = ap.parse_args()
    ref = args.ref.resolve()
    sys.path.insert(0, str(ref))
    numpy_alias_shim()

    import librosa
    import scipy
    import sklearn

    out: dict[str, np.ndarray] = {}
    meta: dict = {
        "reference": "https://github.com/sharathadavanne/seld-dcase2023",
        "commit": COMMIT,
        "clips": clips(),
        "rate": RATE,
        "pcm": "int16, round(x * 32768) clipped",
        "versions": {
            "numpy": np.__version__,
            "librosa": librosa.__version__,
            "scipy": scipy.__version__,
            "sklearn": sklearn.__version__,
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for fmt in TASKS:
            folder = tmp / "data" / f"{fmt}_dev" / "dev-ref"
            folder.mkdir(parents=True)
            for c in clips():
                x = clip_signal(c)
                wavfile.write(folder / f"{c['name']}.wav", RATE, pcm16(x))
            params, scaler = run_reference(ref, fmt, tmp / "data", tmp / "feat")
            meta[f"{fmt}_params"] = {
                k: params[k]
                for k in ("dataset", "fs", "hop_len_s", "label_hop_len_s", "nb_mel_bins", "use_salsalite")
            }
            spatial = 3 if fmt == "foa" else 6
            for c in clips():
                feat = np.load(tmp / "feat" / f"{fmt}_dev" / f"{c['name']}.npy")
                n = int(round(c["seconds"] * RATE)) // int(RATE * params["hop_len_s"])
                assert feat.shape == (n, (4 + spatial) * N_MELS), feat.shape
                picks = frame_picks(n)
                key = f"{fmt}/{c['name']}"
                out[f"{key}/frames"] = picks
                out[f"{key}/logmel"] = feat[picks, : 4 * N_MELS].astype(np.float32)
                out[f"{key}/spatial"] = feat[picks, 4 * N_MELS :].astype(np.float32)
                # every frame: the mean of its log-mel block and of its spatial block
                out[f"{key}/block_mean"] = np.stack(
                    [feat[:, : 4 * N_MELS].mean(-1), feat[:, 4 * N_MELS :].mean(-1)], -1
                ).astype(np.float32)
                if "gap" in c:  # the quiet stretch is clipped at the per-file, per-channel top_db floor
                    logmel = feat[:, : 4 * N_MELS].reshape(n, 4, N_MELS)
                    assert np.all(logmel.min(axis=(0, 2)) == logmel.max(axis=(0, 2)) - 80.0)
                if c["name"] == "single_10s":
                    norm = np.load(tmp / "feat" / f"{fmt}_dev_norm" / f"{c['name']}.npy")
                    out[f"{key}/normalised"] = norm[picks].astype(np.float32)
            out[f"{fmt}/scaler/mean"] = scaler.mean_.astype(np.float32)
            out[f"{fmt}/scaler/scale"] = scaler.scale_.astype(np.float32)
            meta[f"{fmt}_scaler_samples"] = int(scaler.n_samples_seen_)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "outputs.npz", **out)
    (args.out / "params.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    size = (args.out / "outputs.npz").stat().st_size
    print(
        f"wrote {args.out / 'outputs.npz'} ({size / 1024:.0f} KB, {len(out)} arrays) and params.json; "
        f"reference {ref}"
    )


if __name__ == "__main__":
    main()
