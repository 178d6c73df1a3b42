"""Property-based fuzz tests of audio reading (``sed.audio.io``).

Targets: ``load_audio``, ``info`` and ``iter_blocks`` on WAV (PCM 16/24, float), FLAC and Ogg Vorbis
files mutated byte-wise (bit flips, overwrites, insertions, deletions, duplicated slices,
truncation) and structurally (RIFF chunks inserted, duplicated, dropped; fmt fields, chunk sizes,
FLAC STREAMINFO and Vorbis header fields set to absurd values; Ogg pages re-checksummed so that a
mutation reaches the decoder), saved under hostile names.

The invariant (:func:`tests.fuzz.strategies.outcome`): a waveform that is what the reader
promises (float32 ``[C, T]``, finite, as many frames as the header says, blocks that join to the
whole), or one :class:`~sed.errors.AudioError` line naming the file; never another exception, a
hang or a large allocation. A file cut short is never read as a shorter clip.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sed.audio.io import info, iter_blocks, load_audio
from sed.cli.main import main
from sed.errors import AudioError
from tests.fuzz.strategies import (
    SEEDS,
    STEMS,
    apply_compressed,
    apply_wav,
    compressed_mutations,
    mutants,
    outcome,
    riff_chunks,
    scaled,
    seed_bytes,
    seeds,
    wav_mutations,
)


def check_audio(path) -> None:
    """The invariant on one file: ``info``, ``load_audio`` (as is, mono at 16 kHz) and ``iter_blocks``."""
    meta = outcome(lambda: info(path), path)
    loaded = outcome(lambda: load_audio(path), path)
    if isinstance(meta, AudioError):
        assert isinstance(loaded, AudioError), f"info refused {path} ({meta}) but load_audio read it"
        return
    if isinstance(loaded, AudioError):
        return
    wave, sr = loaded
    assert wave.dtype == torch.float32 and wave.dim() == 2
    assert (wave.shape[0], sr) == (meta.channels, meta.sample_rate)
    assert wave.shape[1] == meta.frames, (
        f"read {wave.shape[1]} of the {meta.frames} frames the header declares"
    )
    assert torch.isfinite(wave).all()
    if wave.numel() <= 1 << 20 and meta.duration <= 60:  # resampling costs memory in proportion to duration
        mono = outcome(lambda: load_audio(path, sample_rate=16000, channels="mono"), path)
        if not isinstance(mono, AudioError):
            assert mono[0].shape[0] == 1 and torch.isfinite(mono[0]).all()
        blocks = outcome(lambda: list(iter_blocks(path, 4096)), path)
        if not isinstance(blocks, AudioError):
            assert torch.equal(torch.cat(blocks, dim=1), wave)


def _write(scratch, stem: str, name: str, data: bytes):
    path = scratch() / f"{stem}{name[name.index('.') :]}"
    path.write_bytes(data)
    return path


@given(name=seeds(".wav"), ops=st.lists(wav_mutations, min_size=1, max_size=3), stem=STEMS)
def test_wav_mutations(scratch, name, ops, stem):
    data = seed_bytes(name)
    for op in ops:
        data = apply_wav(data, op)
    check_audio(_write(scratch, stem, name, data))


@scaled(0.5)
@given(
    name=seeds(".flac") | seeds(".ogg"),
    ops=st.lists(compressed_mutations, min_size=1, max_size=2),
    fix_crc=st.booleans(),
    stem=STEMS,
)
def test_flac_and_ogg_mutations(scratch, name, ops, fix_crc, stem):
    data = seed_bytes(name)
    for op in ops:
        data = apply_compressed(data, op, fix_crc)
    check_audio(_write(scratch, stem, name, data))


def _wav_boundaries(data: bytes) -> list[int]:
    out, pos = [0, 4, 8, 12], 12
    for _cid, payload in riff_chunks(data):
        out += [pos, pos + 8, pos + 8 + len(payload) // 2]
        pos += 8 + len(payload) + (len(payload) & 1)
    return out


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_truncation_at_every_region_is_refused(tmp_path, name):
    """Deterministic: a file cut anywhere before its end (every WAV chunk boundary, +-1 byte; every
    tenth of a compressed file) is refused, never read as a shorter clip."""
    data = seed_bytes(name)
    cuts = _wav_boundaries(data) if name.endswith(".wav") else [len(data) * k // 10 for k in range(10)]
    cuts = sorted({min(max(c + d, 1), len(data) - 1) for c in cuts for d in (-1, 0, 1)})
    if name.endswith(".ogg"):  # a Vorbis stream cut after its last full page decodes what it holds
        cuts = [c for c in cuts if c < len(data) * 9 // 10]
    path = tmp_path / name
    for cut in cuts:
        path.write_bytes(data[:cut])
        err = outcome(lambda: load_audio(path), path)  # noqa: B023 - called at once
        assert isinstance(err, AudioError), (
            f"{name} cut at {cut} of {len(data)} bytes was read as {err[0].shape}"
        )


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seeds_read_back(tmp_path, name):
    fmt, subtype, channels, sr, frames = SEEDS[name]
    path = tmp_path / name
    path.write_bytes(seed_bytes(name))
    wave, rate = load_audio(path)
    assert (wave.shape, rate) == ((channels, frames), sr)
    check_audio(path)


@scaled(0.2)
@given(name=st.sampled_from(sorted(SEEDS)), data=st.data(), stem=STEMS)
def test_info_batch_reports_one_line_and_goes_on(tmp_path_factory, name, data, stem):
    """``sedkit info`` on a good file and a mutant: the good file is listed, the mutant is listed or
    costs exactly one escaped error line, and the exit code says which."""
    root = tmp_path_factory.mktemp("batch")
    good = root / "good.wav"
    good.write_bytes(seed_bytes("pcm16_mono.wav"))
    bad = _write(lambda: root, stem, name, data.draw(mutants(seed_bytes(name)), label="mutant"))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["info", str(good), str(bad), "--json"])
    out, err = out.getvalue(), err.getvalue()
    assert str(good) in out
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == (1 if errors else 0) and len(errors) <= 1, (rc, err)
    assert all(line.isprintable() for line in errors), errors


def test_absurd_channel_count_is_refused_without_allocating(tmp_path):
    """A WAV whose fmt chunk claims 65,535 channels at 4 GHz is an AudioError, not a huge array."""
    data = seed_bytes("pcm16_mono.wav")
    for op in (
        ("fmt_field", "channels", 0xFFFF),
        ("fmt_field", "sample_rate", 0xFFFFFFFF),
        ("fmt_field", "block_align", 0),
        ("size_field", b"data", 0x7FFFFFFF),
    ):
        path = tmp_path / f"{op[1]!s}.wav"
        path.write_bytes(apply_wav(data, op))
        result = outcome(lambda: load_audio(path), path)  # noqa: B023 - called at once
        assert isinstance(result, AudioError) or np.prod(result[0].shape) <= 3200 * 2, op
