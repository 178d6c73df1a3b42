"""sed's DCASE SELD front ends (FOALogMelIV, MicLogMelGCC) and FeatureStandardizer against the outputs of
the DCASE 2023 baseline's own ``cls_feature_class.FeatureClass`` (see README.md; made by generate.py).

Each clip is written as the 16-bit PCM WAV the baseline read; a single clip goes through sed's feature
path for SELD data (``FeatureCache``: ``load_audio``, the front end, a ``.npy`` entry read back), the
batches through ``load_audio`` and the front end on one batch. The features, ``[C, frames, 64]`` here, are
compared in the baseline's ``(frames, C * 64)`` channel-major layout: 4 whole frames (log-mel block and
spatial block separately: their ranges differ by orders of magnitude) and every frame's block means. The
standardiser is fitted over the cached features of all clips
(``sed.data.modules.feature_cache.fit_standardizer``), as the baseline's ``StandardScaler.partial_fit`` over
every feature file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from sed.audio.io import load_audio
from sed.audio.spatial import FOALogMelIV, MicLogMelGCC
from sed.data.modules.feature_cache import FeatureCache, fit_standardizer
from tests.reference import common
from tests.reference.seld_features.generate import N_MELS, RATE, clip_signal, pcm16

HERE = Path(__file__).resolve().parent
REF = np.load(HERE / "outputs.npz")
META = json.loads((HERE / "params.json").read_text(encoding="utf-8"))
CLIPS = META["clips"]
FRONTS = {"foa": FOALogMelIV, "mic": MicLogMelGCC}
REGIMES = list(dict.fromkeys(c["regime"] for c in CLIPS))  # 1s 3s 10s 15s 25s batch mixed gap


def write_wav(folder: Path, clip: dict) -> Path:
    path = folder / f"{clip['name']}.wav"
    sf.write(path, pcm16(clip_signal(clip)), RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> dict[str, Path]:
    """Every clip as the 16-bit PCM WAV file the baseline read, by name."""
    folder = tmp_path_factory.mktemp("seld_wavs")
    return {c["name"]: write_wav(folder, c) for c in CLIPS}


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, FeatureCache]:
    """One feature cache per format (each file's features are computed once for the module)."""
    root = tmp_path_factory.mktemp("seld_cache")
    return {fmt: FeatureCache(root, cls()) for fmt, cls in FRONTS.items()}


def check(fmt: str, clip: dict, feats: torch.Tensor) -> None:
    """``feats`` ``[C, frames, 64]`` of one clip against the reference's."""
    key = f"{fmt}/{clip['name']}"
    flat = feats.permute(1, 0, 2).reshape(feats.shape[1], -1).double().numpy()  # baseline layout
    picks = REF[f"{key}/frames"]
    assert flat.shape[0] == REF[f"{key}/block_mean"].shape[0], "frame count"
    common.assert_close(
        flat[picks, : 4 * N_MELS], REF[f"{key}/logmel"], f"{key} log-mel frames {picks.tolist()}"
    )
    common.assert_close(
        flat[picks, 4 * N_MELS :], REF[f"{key}/spatial"], f"{key} spatial frames {picks.tolist()}"
    )
    means = np.stack([flat[:, : 4 * N_MELS].mean(-1), flat[:, 4 * N_MELS :].mean(-1)], -1)
    common.assert_close(means[:, 0], REF[f"{key}/block_mean"][:, 0], f"{key} log-mel mean of every frame")
    common.assert_close(means[:, 1], REF[f"{key}/block_mean"][:, 1], f"{key} spatial mean of every frame")


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("fmt", list(FRONTS))
def test_features_match_baseline(fmt, regime, wavs, caches):
    clips = [c for c in CLIPS if c["regime"] == regime]
    cache = caches[fmt]
    if regime in ("batch", "mixed"):
        waves = [load_audio(wavs[c["name"]], RATE, num_channels=4)[0] for c in clips]
        front = cache.frontend
        with torch.no_grad():
            if regime == "batch":  # one batch of same-length clips (the baseline: one file at a time)
                out = front(torch.stack(waves))
            else:  # one zero-padded batch; each clip's own T // hop frames (the baseline: each file alone)
                longest = max(w.shape[-1] for w in waves)
                out = front(torch.stack([F.pad(w, (0, longest - w.shape[-1])) for w in waves]))
                out = [o[:, : front.num_frames(w.shape[-1])] for o, w in zip(out, waves)]
    else:  # one file: load_audio + front end, stored in and read back from the feature cache
        out = [cache.get(wavs[c["name"]]) for c in clips]
    assert len(out) == len(clips)
    for clip, feats in zip(clips, out):
        check(fmt, clip, feats)


@pytest.mark.parametrize("fmt", list(FRONTS))
def test_standardizer_matches_baseline_scaler(fmt, wavs, caches):
    cache = caches[fmt]
    std = fit_standardizer(cache, [wavs[c["name"]] for c in CLIPS])
    assert int(std.count) == META[f"{fmt}_scaler_samples"]
    common.assert_close(std.mean.reshape(-1), REF[f"{fmt}/scaler/mean"], f"{fmt} scaler mean_")
    common.assert_close(std.scale.reshape(-1), REF[f"{fmt}/scaler/scale"], f"{fmt} scaler scale_")
    key = f"{fmt}/single_10s"
    with torch.no_grad():
        norm = std(cache.get(wavs["single_10s"])[None])[0]
    flat = norm.permute(1, 0, 2).reshape(norm.shape[1], -1)[REF[f"{key}/frames"]]
    common.assert_close(
        flat[:, : 4 * N_MELS], REF[f"{key}/normalised"][:, : 4 * N_MELS], f"{key} normalised log-mel"
    )
    common.assert_close(
        flat[:, 4 * N_MELS :], REF[f"{key}/normalised"][:, 4 * N_MELS :], f"{key} normalised spatial"
    )
