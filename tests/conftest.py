import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.export.fixtures"
]  # the exported ONNX models, shared by tests/export and tests/inference

# Hypothesis profiles: "ci" (the default: few examples, reproducible) and "long" (pytest --hypothesis-profile
# long). Hangs are caught by the fuzz tests' own per-example alarm, not by a deadline.
_FUZZ = dict(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True
)
settings.register_profile("ci", max_examples=100, derandomize=True, **_FUZZ)
settings.register_profile("long", max_examples=10_000, **_FUZZ)
settings.load_profile("ci")


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
