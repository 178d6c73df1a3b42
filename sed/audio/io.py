"""Reading audio: the first step of the one road (file -> waveform).

Waveforms are float32 tensors ``[channels, samples]`` in [-1, 1]. Every problem with a file
raises :class:`AudioError` whose message names the file and the reason.
"""

from __future__ import annotations

import functools
import math
import os
import stat
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
import torchaudio

from sed.errors import AudioError

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "AudioInfo",
    "find_audio_files",
    "info",
    "iter_blocks",
    "load_audio",
    "resample",
    "select_channels",
]

#: Extensions that soundfile (libsndfile) reads and that folder inputs pick up.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3", ".w64", ".rf64", ".caf", ".au")
_UNSUPPORTED = (".m4a", ".aac", ".wma", ".opus", ".mp4", ".webm", ".amr")

Channels = str | int | Sequence[int] | None


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


#: float samples beyond this (60 dB over full scale) are corrupt data, not audio
MAX_AMPLITUDE = 1000.0
#: decoded samples per file byte past which a header's frame count is not trusted for one allocation
#: (PCM is <= 1, FLAC and Vorbis a few; silence compresses further, and is then read in chunks)
MAX_EXPANSION = 64

_FILE_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
}


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(p, "file not found")
    if p.is_dir():
        raise AudioError(p, "is a directory, not an audio file")
    if p.suffix.lower() in _UNSUPPORTED:
        raise AudioError(p, f"unsupported format {p.suffix.lower()} (supported: wav, flac, ogg, aiff, mp3)")
    mode = p.stat().st_mode  # before any open: opening a FIFO for reading would block
    if not stat.S_ISREG(mode):
        raise AudioError(p, f"not a regular file ({_FILE_KINDS.get(stat.S_IFMT(mode), 'special file')})")
    if p.stat().st_size == 0:
        raise AudioError(p, "empty file (0 bytes)")
    return p


def _wav_declared_frames(p: Path, block_align: int) -> int | None:
    """Frames promised by a RIFF/WAVE ``data`` chunk header, or None if not a plain WAV."""
    with open(p, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if size in (0, 0xFFFFFFFF):  # streamed WAV with unknown length
                    return None
                return size // max(block_align, 1)
            f.seek(size + (size & 1), os.SEEK_CUR)


def info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels, frames and duration of a file, read from its header only."""
    p = _check_path(path)
    try:
        i = sf.info(str(p))
    except Exception as e:  # libsndfile: not audio, corrupt header, unknown format
        raise AudioError(p, f"not a readable audio file ({_sf_reason(e)})") from None
    if i.frames <= 0:
        raise AudioError(p, "contains zero samples")
    if i.format in ("WAV", "WAVEX"):
        width = {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8, "PCM_U8": 1}.get(i.subtype)
        declared = _wav_declared_frames(p, width * i.channels) if width else None
        if declared is not None and declared > i.frames:
            raise AudioError(p, f"truncated: header declares {declared} frames, file holds {i.frames}")
    return AudioInfo(str(p), int(i.samplerate), int(i.channels), int(i.frames), i.format, i.subtype)


def _sf_reason(e: Exception) -> str:
    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    # libsndfile messages start with "Error opening '<path>': "; the path is already in front.
    return msg.split("': ", 1)[-1].rstrip(".")


def select_channels(
    wave: torch.Tensor, channels: Channels, path: str | os.PathLike = "<waveform>"
) -> torch.Tensor:
    """Pick channels of ``[C, T]``: None keeps all, 'mono' averages, an int or list selects."""
    if channels is None:
        return wave
    if isinstance(channels, str):
        if channels != "mono":
            raise ValueError(f"channels must be 'mono', an int, a list of ints or None, not {channels!r}")
        return wave.mean(dim=0, keepdim=True)
    idx = [channels] if isinstance(channels, int) else list(channels)
    have = wave.shape[0]
    bad = [c for c in idx if not -have <= c < have]
    if bad:
        need = max(idx) + 1
        raise AudioError(path, f"has {have} channel(s), needs at least {need} (channels {idx} requested)")
    return wave[idx]


#: torchaudio's polyphase kernel holds about (orig/g) x (new/g) taps (g = gcd): past this, soxr resamples
MAX_KERNEL_TAPS = 1 << 22


def _polyphase_ok(orig: int, new: int) -> bool:
    g = math.gcd(orig, new)
    return (orig // g) * (new // g) <= MAX_KERNEL_TAPS


def _fit_length(y: np.ndarray, frames: int) -> np.ndarray:
    """``[T, C]`` cut or zero-padded to ``frames`` rows."""
    if y.shape[0] >= frames:
        return y[:frames]
    return np.concatenate([y, np.zeros((frames - y.shape[0], y.shape[1]), y.dtype)])


@functools.lru_cache(maxsize=16)
def _sinc(orig: int, new: int) -> torchaudio.transforms.Resample:
    """torchaudio's resampler for a rate pair, its kernel built once (in float64, then kept as float32:
    ``torchaudio.functional.resample`` builds it in the wave's float32, ~1e-7 apart, which a log
    spectrogram turns into ~2e-4 in a recording's empty bands; reference loaders use this one)."""
    return torchaudio.transforms.Resample(orig, new)


def _sinc_resample(wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    return _sinc(orig, new)(wave.float().cpu()).to(wave)


def resample(wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Band-limited sinc resampling of ``[..., T]`` to ``ceil(T * new / orig)`` samples:
    ``torchaudio.transforms.Resample``'s default kernel, or soxr (high quality) for rates whose ratio
    would need a kernel of billions of taps (co-prime rates such as 32767 -> 16000 Hz)."""
    if orig == new:
        return wave
    if _polyphase_ok(orig, new):
        return _sinc_resample(wave, orig, new)
    flat = wave.reshape(-1, wave.shape[-1]).detach().cpu().float().numpy().T
    frames = math.ceil(wave.shape[-1] * new / orig)
    y = _fit_length(soxr.resample(np.ascontiguousarray(flat), orig, new, quality="HQ"), frames)
    return torch.from_numpy(np.ascontiguousarray(y.T)).reshape(*wave.shape[:-1], frames).to(wave)


def _check_samples(block: np.ndarray, path: Path, offset: int, sr: int) -> None:
    """NaN, Inf and float samples beyond :data:`MAX_AMPLITUDE` are errors (the first one's time is given)."""
    if not np.isfinite(block).all():
        bad = int(np.argmax(~np.isfinite(block).all(axis=1)))
        kind = "NaN" if np.isnan(block).any() else "Inf"
        raise AudioError(path, f"contains {kind} samples (first at {(offset + bad) / sr:.3f} s)")
    if block.size and np.abs(block).max() > MAX_AMPLITUDE:
        bad = int(np.argmax((np.abs(block) > MAX_AMPLITUDE).any(axis=1)))
        raise AudioError(
            path,
            f"sample of magnitude {np.abs(block[bad]).max():.3g} at {(offset + bad) / sr:.3f} s: "
            f"not audio in [-1, 1] (float samples up to {MAX_AMPLITUDE:g} are accepted)",
        )


def _check_count(path: Path, have: int, num_channels: int | None) -> None:
    if num_channels is not None and have != num_channels:
        raise AudioError(path, f"has {have} channel(s), expected {num_channels}")


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    channels: Channels = None,
    num_channels: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Read a whole file as float32 ``[C, T]`` in [-1, 1].

    ``sample_rate`` resamples; ``channels`` is None (all), ``'mono'`` (average), an int or a
    list of channel indices; ``num_channels`` requires the file to have exactly that many.
    """
    meta = info(path)
    p = Path(meta.path)
    _check_count(p, meta.channels, num_channels)
    sr = meta.sample_rate
    if meta.frames * meta.channels <= MAX_EXPANSION * (p.stat().st_size + (1 << 20)):
        try:
            data = sf.read(str(p), dtype="float32", always_2d=True)[0]
        except Exception as e:
            raise AudioError(p, f"corrupt or truncated audio ({_sf_reason(e)})") from None
        if data.shape[0] < meta.frames:
            raise AudioError(p, f"truncated: read {data.shape[0]} of {meta.frames} frames")
        _check_samples(data, p, 0, sr)
        wave = torch.from_numpy(np.ascontiguousarray(data.T))
    else:  # a header that promises more than the bytes can hold: memory follows what decodes
        wave = torch.cat(list(_read_chunks(p, meta, 1 << 20)), dim=1)
    wave = select_channels(wave, channels, p)
    if sample_rate is not None and sample_rate != sr:
        wave = resample(wave, sr, sample_rate)
        sr = sample_rate
    return wave.contiguous(), sr


def _resample_context(
    orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> tuple[int, int, int]:
    """(reduced orig, reduced new, context in input samples, a multiple of orig) of torchaudio's kernel."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    width = math.ceil(lowpass_filter_width * o / (min(o, n) * rolloff))
    return o, n, o * math.ceil((width + o) / o)


def iter_blocks(
    path: str | os.PathLike,
    block_frames: int,
    sample_rate: int | None = None,
    channels: Channels = None,
    num_channels: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield ``[C, block_frames]`` blocks (the last may be shorter) at ``sample_rate``.

    Memory stays independent of the file's length. With resampling, each block is resampled
    with enough context on both sides that the concatenated blocks equal
    ``load_audio(path, sample_rate)`` up to float round-off.
    """
    if block_frames <= 0:
        raise ValueError("block_frames must be positive")
    meta = info(path)
    p = Path(meta.path)
    _check_count(p, meta.channels, num_channels)
    sr = meta.sample_rate
    target = sample_rate or sr
    out_buf: list[torch.Tensor] = []
    out_len = 0
    for chunk in _iter_resampled(p, meta, target, block_frames):
        chunk = select_channels(chunk, channels, p)
        out_buf.append(chunk)
        out_len += chunk.shape[1]
        while out_len >= block_frames:
            joined = torch.cat(out_buf, dim=1)
            yield joined[:, :block_frames].contiguous()
            rest = joined[:, block_frames:]
            out_buf, out_len = [rest], rest.shape[1]
    if out_len:
        yield torch.cat(out_buf, dim=1).contiguous()


def _read_chunks(p: Path, meta: AudioInfo, frames: int) -> Iterator[torch.Tensor]:
    offset = 0
    try:
        with sf.SoundFile(str(p)) as f:
            while True:
                data = f.read(frames, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                _check_samples(data, p, offset, meta.sample_rate)
                offset += data.shape[0]
                yield torch.from_numpy(np.ascontiguousarray(data.T))
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(p, f"corrupt or truncated audio ({_sf_reason(e)})") from None
    if offset < meta.frames:
        raise AudioError(p, f"truncated: read {offset} of {meta.frames} frames")


def _iter_resampled(p: Path, meta: AudioInfo, target: int, block_frames: int) -> Iterator[torch.Tensor]:
    sr = meta.sample_rate
    if target == sr:
        yield from _read_chunks(p, meta, block_frames)
        return
    if not _polyphase_ok(sr, target):
        yield from _soxr_stream(p, meta, target, block_frames)
        return
    o, n, ctx = _resample_context(sr, target)
    step = o * max(1, math.ceil(block_frames * sr / target / o))  # input samples per step, a multiple of o
    total_out = math.ceil(n * meta.frames / o)
    produced = 0
    # buf holds input samples [buf_start, ...); zeros stand in before the file start and after its end.
    buf = torch.zeros(meta.channels, ctx)
    buf_start = -ctx
    s = 0  # start of the next output step in input samples
    eof = False
    reader = _read_chunks(p, meta, step)
    while produced < total_out:
        while not eof and buf_start + buf.shape[1] < s + step + ctx:
            nxt = next(reader, None)
            if nxt is None:
                eof = True
            else:
                buf = torch.cat([buf, nxt], dim=1)
        have_end = buf_start + buf.shape[1]
        if have_end < s + step + ctx:
            buf = torch.cat([buf, buf.new_zeros(buf.shape[0], s + step + ctx - have_end)], dim=1)
        seg = buf[:, s - ctx - buf_start : s + step + ctx - buf_start]
        y = _sinc_resample(seg, o, n)
        first = ctx // o * n
        take = min(step // o * n, total_out - produced)
        yield y[:, first : first + take]
        produced += take
        s += step
        drop = s - ctx - buf_start
        buf, buf_start = buf[:, drop:], buf_start + drop


def _soxr_stream(p: Path, meta: AudioInfo, target: int, block_frames: int) -> Iterator[torch.Tensor]:
    """:func:`resample`'s soxr path, chunk by chunk (soxr's stream equals its one-shot result)."""
    stream = soxr.ResampleStream(meta.sample_rate, target, meta.channels, dtype="float32", quality="HQ")
    left = math.ceil(meta.frames * target / meta.sample_rate)
    chunks = _read_chunks(p, meta, block_frames)
    for chunk in chunks:
        y = stream.resample_chunk(np.ascontiguousarray(chunk.numpy().T), last=False)[:left]
        left -= y.shape[0]
        yield torch.from_numpy(np.ascontiguousarray(y.T))
    y = _fit_length(stream.resample_chunk(np.zeros((0, meta.channels), np.float32), last=True), max(left, 0))
    yield torch.from_numpy(np.ascontiguousarray(y.T))


def find_audio_files(
    inputs: Sequence[str | os.PathLike], extensions: Sequence[str] = AUDIO_EXTENSIONS
) -> list[Path]:
    """Expand files, folders (recursive) and glob patterns into a sorted, de-duplicated file list.

    A named file is kept whatever its extension (so that a bad file is reported, not skipped);
    folders and globs contribute files with an audio extension. An input that matches nothing
    raises ``AudioError``.
    """
    import glob

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in extensions)
        elif p.exists() or not glob.has_magic(str(item)):
            found = [p]
        else:
            found = sorted(
                Path(f)
                for f in glob.glob(str(item), recursive=True)
                if Path(f).is_file() and Path(f).suffix.lower() in extensions
            )
        if not found:
            raise AudioError(p, "no audio files found")
        out.extend(found)
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique
