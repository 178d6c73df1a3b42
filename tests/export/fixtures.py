import numpy as np
import pytest
import torch

from sed.checkpoint import save_model
from sed.data import synth_signals
from sed.export.onnx import export_onnx
from sed.models import create_model

LABELS = ["dog", "rain", "siren", "tone", "hiss"]


def _ast():
    torch.manual_seed(0)
    model = create_model("ast_micro", num_classes=5, input_tdim=48, labels=LABELS).eval()
    with torch.no_grad():  # a head with the logit spread of a trained one (random heads give near-ties)
        model.head[1].weight.mul_(30.0)
    return model


def _cnn():
    torch.manual_seed(0)
    return create_model("cnn_tiny", num_classes=5, labels=LABELS, clip_seconds=1.0).eval()


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """name -> (PyTorch model, its .pt checkpoint, its exported .onnx), for ast_micro and cnn_tiny."""
    root = tmp_path_factory.mktemp("exported")
    out = {}
    for name, build in (("ast", _ast), ("cnn", _cnn)):
        model = build()
        pt = save_model(root / f"{name}.pt", model)
        report = export_onnx(model, root / f"{name}.onnx", source=pt)
        out[name] = (model, pt, report["path"])
    return out


def synthetic_clips(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    """``[n, samples]`` clips of the synthetic corpus' signal kinds (tones, chirps, noises, clicks...)."""
    rng = np.random.default_rng(seed)
    kinds = [synth_signals.tone, synth_signals.chirp, synth_signals.noise_burst, synth_signals.click_train,
             synth_signals.harmonic_stack, synth_signals.am_tone, synth_signals.fm_tone, synth_signals.hiss]
    clips = [kinds[i % len(kinds)](rng, samples, 16000) for i in range(n)]
    return torch.from_numpy(np.stack([0.5 * c / max(np.abs(c).max(), 1e-6) for c in clips]).astype(np.float32))
