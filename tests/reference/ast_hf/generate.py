"""Reference outputs of the Hugging Face AST port (transformers' ``ASTForAudioClassification`` and
``ASTFeatureExtractor``) for sed's tests of Hugging Face AST directories.

    python tests/reference/ast_hf/generate.py \
        --labels-csv /work/refs/ast/egs/audioset/data/class_labels_indices.csv

The reference is the installed transformers (5.25.0 when the fixtures were made), or the one under ``--ref``
(a transformers checkout: ``PATH/src`` goes first on ``sys.path``). What it does:

1. a tiny ``ASTConfig`` (64 wide, 2 layers, 2 heads, intermediate 128, max_length 1024, 128 mel bins, strides
   10/10, 527 classes named by ``id2label`` = the AudioSet display names of ``--labels-csv``);
2. a manifest (``weights.json``) of every tensor ``save_pretrained`` writes to ``model.safetensors`` (its key
   names, the transformers-4 ones, which transformers 5 still writes; shapes; a fill rule each), filled by
   ``tests.reference.common``, written as ``model.safetensors`` and loaded with ``from_pretrained`` (no
   missing, unexpected or mismatched key);
3. ``save_pretrained`` of that model and of ``ASTFeatureExtractor()`` into a temp dir (the release layout:
   ``config.json``, ``preprocessor_config.json``, ``model.safetensors``: checked to hold exactly the
   manifest's tensors), loaded back with ``ASTForAudioClassification.from_pretrained`` /
   ``ASTFeatureExtractor.from_pretrained``; both JSON files go into ``weights.json`` so that the test writes
   the same directory;
4. ``feature_extractor(waves, sampling_rate=16000, return_tensors="pt")`` then ``model(input_values).logits``
   on the ``common.signal`` clips: each single clip, the same-length batch as one call, the mixed clips each
   alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the sed repository root, for tests.reference.common (not sed)
from tests.reference import common  # noqa: E402

RATE = 16000
SEED = 4321
#: rows of the [1024, 128] input_values kept in outputs.npz
FBANK_ROWS = np.arange(3, 1024, 16)
CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_length": 1024,
    "num_mel_bins": 128,
    "frequency_stride": 10,
    "time_stride": 10,
    "patch_size": 16,
}


def entry_for(key: str, shape) -> dict:
    """LayerNorm weights 1 +- 0.1 (biases 0 +- 0.05), other biases 0 +- 0.05, tokens and positions 0 +- 0.5,
    Linear/conv weights with std 1/sqrt(fan_in)."""
    shape = list(shape)
    if re.search(r"layernorm(_before|_after)?\.(weight|bias)$", key):
        weight = key.endswith("weight")
        return common.manifest_entry(key, shape, mean=1.0 if weight else 0.0, std=0.1 if weight else 0.05)
    if key.endswith("bias"):
        return common.manifest_entry(key, shape, std=0.05)
    if key.endswith(("cls_token", "distillation_token", "position_embeddings")):
        return common.manifest_entry(key, shape, std=0.5)
    return common.manifest_entry(key, shape, std=1.0 / np.sqrt(int(np.prod(shape[1:]))))


def check_file(path: Path, tensors: dict, metadata: dict) -> None:
    """``path`` holds exactly ``tensors`` (same keys, same values) and ``metadata``."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        assert sorted(f.keys()) == sorted(tensors) and f.metadata() == metadata, path
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), tensors[key]), key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--labels-csv", required=True, help="AudioSet class_labels_indices.csv (index,mid,display_name)"
    )
    ap.add_argument("--ref", default=None, help="a transformers checkout to use instead of the installed one")
    ap.add_argument("--out", default=str(HERE), help="folder for outputs.npz and weights.json")
    args = ap.parse_args()
    if args.ref:
        sys.path.insert(0, str(Path(args.ref).resolve() / "src"))
    warnings.filterwarnings("ignore")

    import safetensors
    import transformers
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification
    from transformers.models.audio_spectrogram_transformer import (
        feature_extraction_audio_spectrogram_transformer as fe,
    )

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    with open(args.labels_csv, newline="", encoding="utf-8") as f:
        names = [row["display_name"] for row in sorted(csv.DictReader(f), key=lambda r: int(r["index"]))]
    assert len(names) == 527
    config = ASTConfig(
        **CONFIG, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # the keys save_pretrained writes, from a throw-away save of a fresh model
        ASTForAudioClassification(config).save_pretrained(tmp / "keys")
        with safe_open(tmp / "keys" / "model.safetensors", "pt") as f:
            layout = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
            metadata = f.metadata()
        assert all(dtype == "F32" for _, dtype in layout.values())
        entries = [entry_for(k, shape) for k, (shape, _) in layout.items()]
        tensors = common.tensors_from({"seed": SEED, "tensors": entries})

        # transformers 5 names its modules v5-style (layers.N.attention.q_proj) but writes and reads the v4
        # names (encoder.layer.N.attention.attention.query) on disk: the tensors go in through a file, as from
        # the hub
        save_file(tensors, str(tmp / "keys" / "model.safetensors"), metadata=metadata)
        model, info = ASTForAudioClassification.from_pretrained(tmp / "keys", output_loading_info=True)
        assert not any(info.values()), info
        release = tmp / "ast-tiny-audioset"
        model.save_pretrained(release)
        ASTFeatureExtractor().save_pretrained(release)
        assert sorted(p.name for p in release.iterdir()) == [
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
        ]
        check_file(release / "model.safetensors", tensors, metadata)
        config_json = json.loads((release / "config.json").read_text())
        preprocessor_json = json.loads((release / "preprocessor_config.json").read_text())
        common.save_manifest(
            out / "weights.json",
            SEED,
            entries,
            safetensors_metadata=metadata,
            config_json=config_json,
            preprocessor_config_json=preprocessor_json,
        )

        # the release directory, loaded as the port loads it
        extractor = ASTFeatureExtractor.from_pretrained(release)
        ref_model, info = ASTForAudioClassification.from_pretrained(release, output_loading_info=True)
        assert not any(info.values()), info
        ref_model.eval().save_pretrained(tmp / "again")  # what it loaded is what the manifest holds
        check_file(tmp / "again" / "model.safetensors", tensors, metadata)

    def run(waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        batch = waves[0] if len(waves) == 1 else waves
        inputs = extractor(batch, sampling_rate=RATE, return_tensors="pt")
        with torch.no_grad():
            logits = ref_model(**inputs).logits
        return logits.numpy(), inputs["input_values"].numpy()

    clips = {f"{s:g}s": [common.signal(s, RATE, 0)[0]] for s in common.LENGTHS}
    clips["batch"] = [common.signal(3.0, RATE, seed)[0] for seed in (1, 2, 3)]
    clips["mixed"] = [common.signal(s, RATE, seed)[0] for s, seed in zip(common.MIXED, (4, 5, 6))]
    outputs, report = {}, {}
    for regime, waves in clips.items():
        if regime == "mixed":  # each clip alone (the rule); the extractor would pad each to max_length anyway
            runs = [run([w]) for w in waves]
            logits, fbank = np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])
            report["mixed_as_one_batch_vs_alone"] = common.max_rel_diff(run(waves)[0], logits)
        else:
            logits, fbank = run(waves)
        if regime == "batch":
            report["batch_vs_alone"] = common.max_rel_diff(
                np.concatenate([run([w])[0] for w in waves]), logits
            )
        assert fbank.shape == (len(waves), 1024, 128) and logits.shape == (len(waves), 527)
        outputs[f"{regime}_logits"] = logits.astype(np.float32)
        outputs[f"{regime}_fbank"] = fbank[:, FBANK_ROWS].astype(np.float32)
        report[regime] = (float(logits.min()), float(logits.max()))
    outputs["fbank_rows"] = FBANK_ROWS.astype(np.int64)
    np.savez_compressed(out / "outputs.npz", **outputs)

    import torchaudio

    versions = {
        "python": sys.version.split()[0],
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "fbank_backend": "torchaudio.compliance.kaldi"
        if fe.is_speech_available()
        else "numpy (transformers.audio_utils.spectrogram)",
        "attn_implementation": ref_model.config._attn_implementation,
    }
    print(json.dumps({"versions": versions, "report": report}, indent=1))


if __name__ == "__main__":
    main()
