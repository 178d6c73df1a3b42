import numpy as np
import pytest
import soundfile as sf
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def write_wav(tmp_path):
    """Write ``data`` ([T] or [T, C] float in [-1, 1]) and return its path."""

    def _write(name, data, sr=16000, subtype="PCM_16", fmt=None):
        path = tmp_path / name
        sf.write(str(path), np.asarray(data), sr, subtype=subtype, format=fmt)
        return path

    return _write
