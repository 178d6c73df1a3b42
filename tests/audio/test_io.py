import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from sed.audio.io import AudioError, info, iter_blocks, load_audio, select_channels


def tone(n, sr, f=440.0, ch=1, amp=0.5):
    t = np.arange(n) / sr
    x = amp * np.sin(2 * np.pi * f * t)
    return np.stack([x * (0.5 + 0.5 * c / max(ch, 1)) for c in range(ch)], axis=1) if ch > 1 else x


@pytest.mark.parametrize(
    "subtype,tol", [("PCM_16", 1 / 32768), ("PCM_24", 1e-6), ("PCM_32", 1e-8), ("FLOAT", 0), ("DOUBLE", 1e-7)]
)
def test_every_sample_format_scaled_to_unit_range(write_wav, subtype, tol):
    x = tone(1600, 16000)
    p = write_wav(f"a_{subtype}.wav", x, subtype=subtype)
    wave, sr = load_audio(p)
    assert sr == 16000 and wave.dtype == torch.float32 and wave.shape == (1, 1600)
    assert np.abs(wave[0].numpy() - x).max() <= tol + 1e-7


@pytest.mark.parametrize(
    "ext,fmt,subtype", [("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"), ("aiff", "AIFF", "PCM_16")]
)
def test_other_containers(write_wav, ext, fmt, subtype):
    x = tone(8000, 16000)
    p = write_wav(f"a.{ext}", x, fmt=fmt, subtype=subtype)
    wave, sr = load_audio(p)
    assert sr == 16000 and wave.shape[0] == 1
    tol = 0.05 if fmt == "OGG" else 1e-4  # vorbis is lossy
    n = min(wave.shape[1], len(x))
    assert np.abs(wave[0, 1000 : n - 1000].numpy() - x[1000 : n - 1000]).max() < tol


def test_info_reads_header(write_wav):
    p = write_wav("s.wav", tone(24000, 24000, ch=4), sr=24000)
    i = info(p)
    assert (i.sample_rate, i.channels, i.frames) == (24000, 4, 24000)
    assert i.duration == pytest.approx(1.0)


def test_resampling_matches_torchaudio(write_wav):
    x = tone(44100, 44100, f=1000)
    p = write_wav("r.wav", x, sr=44100, subtype="FLOAT")
    wave, sr = load_audio(p, sample_rate=16000)
    ref = AF.resample(torch.from_numpy(x).float()[None], 44100, 16000)
    assert sr == 16000 and wave.shape == ref.shape == (1, 16000)
    assert torch.allclose(wave, ref, atol=1e-6)


def test_channel_selection(write_wav):
    x = np.random.uniform(-0.5, 0.5, (1000, 4)).astype(np.float32)
    p = write_wav("c.wav", x, subtype="FLOAT")
    assert torch.allclose(load_audio(p, channels="mono")[0][0], torch.from_numpy(x.mean(1)), atol=1e-6)
    assert torch.equal(load_audio(p, channels=2)[0][0], torch.from_numpy(x[:, 2]))
    assert torch.equal(load_audio(p, channels=[3, 0])[0], torch.from_numpy(x[:, [3, 0]].T.copy()))
    assert load_audio(p, num_channels=4)[0].shape == (4, 1000)


def test_wrong_channel_count_is_an_error(write_wav):
    p = write_wav("stereo.wav", tone(1000, 16000, ch=2))
    with pytest.raises(AudioError, match=r"stereo\.wav: has 2 channel\(s\), expected 4"):
        load_audio(p, num_channels=4)
    with pytest.raises(AudioError, match=r"stereo\.wav: has 2 channel\(s\), needs at least 4"):
        load_audio(p, channels=[0, 1, 2, 3])


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav")


def test_not_audio(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not a wav file at all, just text " * 10)
    with pytest.raises(AudioError, match=r"notes\.wav: not a readable audio file"):
        load_audio(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: empty file"):
        load_audio(p)


def test_zero_samples(write_wav):
    p = write_wav("zero.wav", np.zeros(0))
    with pytest.raises(AudioError, match=r"zero\.wav: contains zero samples"):
        load_audio(p)


def test_truncated_wav(write_wav):
    p = write_wav("trunc.wav", tone(16000, 16000))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"trunc\.wav: truncated: header declares 16000 frames"):
        load_audio(p)


def test_corrupt_flac(write_wav):
    p = write_wav("bad.flac", tone(16000, 16000), fmt="FLAC")
    data = bytearray(p.read_bytes())
    data[200:] = b"\x00" * (len(data) - 200)
    p.write_bytes(bytes(data))
    with pytest.raises(AudioError, match=r"bad\.flac: (corrupt|truncated|not a readable)"):
        load_audio(p)


@pytest.mark.parametrize("value,kind", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_nan_and_inf(write_wav, value, kind):
    x = tone(16000, 16000).astype(np.float32)
    x[8000] = value
    p = write_wav(f"{kind}.wav", x, subtype="FLOAT")
    with pytest.raises(AudioError, match=rf"{kind}\.wav: contains {kind} samples \(first at 0\.500 s\)"):
        load_audio(p)
    with pytest.raises(AudioError, match=kind):
        list(iter_blocks(p, 4000))


def test_unsupported_format(tmp_path):
    p = tmp_path / "song.m4a"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(AudioError, match=r"song\.m4a: unsupported format \.m4a"):
        load_audio(p)


@pytest.mark.parametrize(
    "sr_in,sr_out,block",
    [
        (16000, None, 3000),
        (44100, 16000, 7000),
        (4000, 16000, 5000),
        (24000, 16000, 16000),
        (22050, 16000, 999),
        (32767, 16000, 4000),
    ],
)
def test_block_reading_equals_whole_file(write_wav, sr_in, sr_out, block):
    x = np.random.uniform(-0.5, 0.5, (int(sr_in * 2.37), 2)).astype(np.float32)
    p = write_wav("long.wav", x, sr=sr_in, subtype="FLOAT")
    whole, _ = load_audio(p, sample_rate=sr_out)
    blocks = list(iter_blocks(p, block, sample_rate=sr_out))
    assert all(b.shape[1] == block for b in blocks[:-1]) and 0 < blocks[-1].shape[1] <= block
    joined = torch.cat(blocks, dim=1)
    assert joined.shape == whole.shape
    assert (joined - whole).abs().max() < 1e-5


def test_block_reading_channel_selection(write_wav):
    x = np.random.uniform(-0.5, 0.5, (5000, 2)).astype(np.float32)
    p = write_wav("st.wav", x, subtype="FLOAT")
    blocks = list(iter_blocks(p, 1000, channels="mono"))
    assert torch.allclose(torch.cat(blocks, 1)[0], torch.from_numpy(x.mean(1)), atol=1e-6)
    with pytest.raises(AudioError, match="expected 4"):
        next(iter_blocks(p, 1000, num_channels=4))


def test_select_channels_rejects_bad_spec():
    with pytest.raises(ValueError, match="mono"):
        select_channels(torch.zeros(2, 10), "left")


def test_long_file_blocks_have_fixed_size(write_wav):
    sr = 8000
    x = np.random.uniform(-0.5, 0.5, sr * 30).astype(np.float32)
    p = write_wav("long.wav", x, sr=sr, subtype="FLOAT")
    sizes = [b.shape[1] for b in iter_blocks(p, 4000, sample_rate=16000)]
    assert sum(sizes) == 16000 * 30 and set(sizes) == {4000}


def test_coprime_rates_resample_in_bounded_memory(write_wav):
    """32767 -> 16000 Hz would need a torchaudio kernel of 16000 x 32779 taps (2 GB, found by the fuzz
    tests): soxr resamples it, to the same length rule, as a clean band-limited tone."""
    from sed.audio.io import MAX_KERNEL_TAPS, resample

    assert 32767 * 16000 > MAX_KERNEL_TAPS >= 441 * 160  # 44.1 kHz -> 16 kHz stays on torchaudio
    p = write_wav("odd.wav", tone(32767, 32767), sr=32767, subtype="FLOAT")
    wave, sr = load_audio(p, sample_rate=16000)
    assert sr == 16000 and wave.shape == (1, 16000)
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(wave[0, 100:-100].numpy() - ref[100:-100]).max() < 1e-4
    batch = torch.from_numpy(np.stack([tone(1001, 32767), -tone(1001, 32767)])).float()[None]
    out = resample(batch, 32767, 16000)
    assert out.shape == (1, 2, 489) and torch.allclose(out[0, 0], -out[0, 1])


def test_absurd_float_amplitude_is_an_error(write_wav):
    x = tone(1600, 16000)
    x[800] = 3e38  # finite, but its square (features, a channel mean) overflows
    p = write_wav("loud.wav", x, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"loud.wav: sample of magnitude 3e\+38 at 0.050 s: not audio"):
        load_audio(p)
    x[800] = 2.0  # headroom above full scale is kept
    assert load_audio(write_wav("hot.wav", x, subtype="FLOAT"))[0].max() == 2.0


def test_flac_header_promising_billions_of_frames_is_read_in_chunks(write_wav):
    """STREAMINFO's total_samples set to 2**36 - 1: one read would allocate 256 GiB (a MemoryError
    found by the fuzz tests); the frames that decode are read and the file is reported truncated."""
    p = write_wav("lie.flac", tone(3200, 16000), fmt="FLAC")
    data = bytearray(p.read_bytes())
    word = int.from_bytes(data[18:26], "big") | ((1 << 36) - 1)
    p.write_bytes(bytes(data[:18]) + word.to_bytes(8, "big") + bytes(data[26:]))
    assert info(p).frames == (1 << 36) - 1
    with pytest.raises(AudioError, match="lie.flac: corrupt or truncated audio") as err:
        load_audio(p)
    assert not isinstance(err.value.__context__, MemoryError)
