"""Reference (yardstick) ports of the DCASE SELD baseline feature extractor.

These are straightforward per-channel numpy/librosa ports of ``cls_feature_class.py`` of the
DCASE 2022/2023 baseline (../shared/specs/seld.md section 2, steps 1-6). They exist only to
check and benchmark the batched tensor front ends in :mod:`sed.audio.spatial`
(:class:`~sed.audio.spatial.FOALogMelIV`, :class:`~sed.audio.spatial.MicLogMelGCC`); they are
deliberately unoptimised and are not used by models or data pipelines.

The definition followed is the baseline's own, quirks included: the audio is scaled as int16
(``/ 32768``, done by the caller here: pass float audio in [-1, 1]) and ``1e-8`` is added to
every sample; everything is computed in float64 with librosa's float32 mel matrix; the output is
the baseline's ``(frames, channels * 64)`` channel-major layout (use :func:`to_channels_first`
for ``[channels, frames, 64]``).
"""

from __future__ import annotations

import librosa
import numpy as np

EPS = 1e-8


def _check(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 2 or audio.shape[1] < 4:
        raise ValueError(f"expected audio [samples, >=4 channels], got shape {audio.shape}")
    return audio[:, :4].astype(np.float64) + EPS


def _params(sr: int) -> tuple[int, int, int]:
    hop = int(sr * 0.02)
    win = 2 * hop
    nfft = 2 ** (win - 1).bit_length()
    return hop, win, nfft


def baseline_spectrogram(audio: np.ndarray, sr: int = 24000) -> np.ndarray:
    """Complex STFT ``(frames, bins, 4)`` as ``FeatureClass._spectrogram``: per-channel
    ``librosa.core.stft`` (hann, centred, librosa's default padding), first ``int(len / hop)``
    frames kept. ``audio`` is ``(samples, channels)`` in [-1, 1] (``1e-8`` is added here)."""
    x = _check(audio)
    hop, win, nfft = _params(sr)
    nb_frames = int(len(x) / float(hop))
    spectra = []
    for ch in range(x.shape[1]):
        s = librosa.core.stft(np.asfortranarray(x[:, ch]), n_fft=nfft, hop_length=hop, win_length=win,
                              window="hann")
        spectra.append(s[:, :nb_frames])
    return np.array(spectra).T


def _mel_wts(sr: int, nfft: int, n_mels: int) -> np.ndarray:
    return librosa.filters.mel(sr=sr, n_fft=nfft, n_mels=n_mels).T


def baseline_logmel(spec: np.ndarray, mel_wts: np.ndarray) -> np.ndarray:
    """``(frames, channels * n_mels)``: per channel ``power_to_db(|S|^2 @ mel_wts)`` (librosa
    defaults: ref 1, amin 1e-10, top_db 80 per channel)."""
    n_mels = mel_wts.shape[1]
    feat = np.zeros((spec.shape[0], n_mels, spec.shape[-1]))
    for ch in range(spec.shape[-1]):
        mag = np.abs(spec[:, :, ch]) ** 2
        feat[:, :, ch] = librosa.power_to_db(np.dot(mag, mel_wts))
    return feat.transpose((0, 2, 1)).reshape((spec.shape[0], -1))


def baseline_intensity_vectors(spec: np.ndarray, mel_wts: np.ndarray) -> np.ndarray:
    """``(frames, 3 * n_mels)``: ``Re(conj(W) [Y, Z, X]) / (1e-8 + |W|^2 + (|Y|^2+|Z|^2+|X|^2) / 3)``,
    mel-projected with the unnormalised mel matrix."""
    n_mels = mel_wts.shape[1]
    w = spec[:, :, 0]
    iv = np.real(np.conj(w)[:, :, np.newaxis] * spec[:, :, 1:])
    energy = EPS + (np.abs(w) ** 2 + (np.abs(spec[:, :, 1:]) ** 2).sum(-1) / 3.0)
    iv_norm = iv / energy[:, :, np.newaxis]
    iv_mel = np.transpose(np.dot(np.transpose(iv_norm, (0, 2, 1)), mel_wts), (0, 2, 1))
    return iv_mel.transpose((0, 2, 1)).reshape((spec.shape[0], n_mels * 3))


def baseline_gcc(spec: np.ndarray, n_lags: int = 64) -> np.ndarray:
    """``(frames, pairs * n_lags)``: GCC-PHAT ``irfft(exp(j angle(conj(S_m) S_n)))`` for pairs m < n,
    lags ``-n_lags/2 .. n_lags/2 - 1``."""
    nch = spec.shape[-1]
    pairs = [(m, n) for m in range(nch) for n in range(m + 1, nch)]
    feat = np.zeros((spec.shape[0], n_lags, len(pairs)))
    for cnt, (m, n) in enumerate(pairs):
        r = np.conj(spec[:, :, m]) * spec[:, :, n]
        cc = np.fft.irfft(np.exp(1.0j * np.angle(r)))
        feat[:, :, cnt] = np.concatenate((cc[:, -n_lags // 2:], cc[:, : n_lags // 2]), axis=-1)
    return feat.transpose((0, 2, 1)).reshape((spec.shape[0], -1))


def baseline_foa_features(audio: np.ndarray, sr: int = 24000, n_mels: int = 64) -> np.ndarray:
    """Baseline FOA features ``(frames, 7 * n_mels)``: 4 log-mel + 3 intensity-vector channels
    (Y, Z, X) of ``(samples, 4)`` audio in [-1, 1]."""
    spec = baseline_spectrogram(audio, sr)
    mel_wts = _mel_wts(sr, _params(sr)[2], n_mels)
    return np.concatenate((baseline_logmel(spec, mel_wts), baseline_intensity_vectors(spec, mel_wts)), axis=-1)


def baseline_mic_features(audio: np.ndarray, sr: int = 24000, n_mels: int = 64) -> np.ndarray:
    """Baseline MIC features ``(frames, 10 * n_mels)``: 4 log-mel + 6 GCC-PHAT channels."""
    spec = baseline_spectrogram(audio, sr)
    mel_wts = _mel_wts(sr, _params(sr)[2], n_mels)
    return np.concatenate((baseline_logmel(spec, mel_wts), baseline_gcc(spec, n_mels)), axis=-1)


def to_channels_first(feat: np.ndarray, n_mels: int = 64) -> np.ndarray:
    """Baseline layout ``(frames, channels * n_mels)`` -> ``(channels, frames, n_mels)``."""
    t = feat.shape[0]
    return feat.reshape(t, -1, n_mels).transpose(1, 0, 2)
