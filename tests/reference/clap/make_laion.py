"""Reference fixtures for LAION-CLAP's original ``.pt`` releases, produced by the original code
(github.com/LAION-AI/CLAP, ``src/laion_clap``; the commit is in ``COMMIT``).

Usage (environment: README.md here)::

    /work/venvs/laion_clap/bin/python tests/reference/clap/make_laion.py --ref /work/refs/laion_clap

Builds two small random ``laion_clap.CLAP_Module`` models, unfused and fused (``aff_2d``, the fusion the
package builds), with the package's own classes: an HTSAT (``HTSAT_Swin_Transformer``, 8 wide, depths
2-2-2-2, heads 1-2-2-4, window 8, 256 spec size, 64 mels) and a RoBERTa text tower (64 wide, 1 layer, 1
head, the tiny byte-level BPE vocabulary of ``tests/models/clap_dir.py``), 16-dim joint space. Three
things of the package cannot run offline or at this size and are replaced, nothing else:
``RobertaModel.from_pretrained('roberta-base')`` and ``RobertaTokenizer.from_pretrained('roberta-base')``
(downloads: a tiny config / the tiny tokenizer), ``create_htsat_model`` (fixed tiny/base/large sizes: the
same class with the sizes above) and ``text_projection``'s hard-coded 768 input (rebuilt as the same
Linear-ReLU-Linear with a 64 input). The audio config is HTSAT-tiny's except ``window_size`` 4096 and
``hop_size`` 2000 (241 frames a 10-s clip instead of 1001, so the stored features stay small).

The float weights come from ``laion_weights.json`` (``tests.reference.common`` manifest); the derived
buffers (``relative_position_index``, ``attn_mask``, torchlibrosa's STFT and mel matrices, BatchNorm
counters) keep the package's values and are listed in the manifest with ``"derived": true``. Each model
is saved as a release file (``{"epoch", "name", "state_dict"}``; the unfused one with DDP's ``module.``
prefix), loaded back with ``CLAP_Module.load_ckpt`` and run: ``get_audio_embedding_from_data`` on
``common.signal`` clips of 3, 10 and 15 s, alone and as one list, and ``get_text_embedding`` on three
prompts. Forward hooks record the features the audio tower received (the unfused log-mel after
torchlibrosa, the fused ``mel_fusion`` and ``longer``), so the test can feed transformers' ClapModel the
same features. This script imports the original from ``--ref`` and never imports sed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))  # the repository root, for tests.reference.common and the tiny tokenizer

from tests.reference import common  # noqa: E402

SEED = 20260318
RATE = 48000
SECONDS = (3.0, 10.0, 15.0)
PROMPTS = ["This is a sound of dog.", "a siren", "sound"]
HTSAT = {"embed_dim": 8, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 2, 4], "window_size": 8, "class_num": 4}
TEXT = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 64}
JOINT = 16
MODEL_CFG = {
    "embed_dim": 64,  # the HTSAT's last width, audio_projection's input
    "joint_embed_shape": JOINT,
    "audio_cfg": {
        "audio_length": 1024,
        "clip_samples": 480000,
        "mel_bins": 64,
        "sample_rate": RATE,
        "window_size": 4096,
        "hop_size": 2000,
        "fmin": 50,
        "fmax": 14000,
        "class_num": HTSAT["class_num"],
        "model_type": "HTSAT",
        "model_name": "tiny",
    },
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}
DERIVED = ("relative_position_index", "attn_mask", "num_batches_tracked", "spectrogram_extractor.")
DERIVED += ("logmel_extractor.", "position_ids")


def derived(key: str) -> bool:
    return any(d in key for d in DERIVED)


def entry(key: str, t: torch.Tensor) -> dict:
    if derived(key) or not t.dtype.is_floating_point:
        return {**common.manifest_entry(key, t.shape, str(t.dtype).removeprefix("torch.")), "derived": True}
    if key.endswith("running_var"):
        return common.manifest_entry(key, t.shape, mean=1.0, std=0.2, positive=True)
    if key.endswith("running_mean"):
        return common.manifest_entry(key, t.shape, std=0.5)
    if key.startswith("logit_scale"):
        return common.manifest_entry(key, t.shape, mean=2.0, std=0.1)
    norm = any(n in key for n in ("norm", "LayerNorm", "bn0", "att.1.", "att.4.", "att.2.", "att.5."))
    if norm and key.endswith("weight") and t.dim() == 1:
        return common.manifest_entry(key, t.shape, mean=1.0, std=0.1)
    return common.manifest_entry(
        key, t.shape, std=0.02 if t.dim() == 1 else 0.3 / max(t[0].numel(), 1) ** 0.5
    )


def patch_package(ref: Path, tokdir: Path):
    # laion_clap imports its clap_module as a top-level package (it appends its own folder to sys.path)
    sys.path[:0] = [str(ref / "src"), str(ref / "src" / "laion_clap")]
    import clap_module.factory as factory
    import clap_module.htsat as htsat
    import clap_module.model as model_mod
    import laion_clap
    import laion_clap.hook as hook
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    class TinyRoberta:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            assert name == "roberta-base", name
            tok = RobertaTokenizer.from_pretrained(str(tokdir))
            cfg = RobertaConfig(
                vocab_size=len(tok),
                max_position_embeddings=80,
                type_vocab_size=1,
                layer_norm_eps=1e-5,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
                **TEXT,
            )
            return RobertaModel(cfg)

    class TinyTokenizer:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            assert name == "roberta-base", name
            return RobertaTokenizer.from_pretrained(str(tokdir))

    def tiny_htsat(audio_cfg, enable_fusion=False, fusion_type="None"):
        return htsat.HTSAT_Swin_Transformer(
            spec_size=256,
            patch_size=4,
            patch_stride=(4, 4),
            num_classes=audio_cfg.class_num,
            embed_dim=HTSAT["embed_dim"],
            depths=HTSAT["depths"],
            num_heads=HTSAT["num_heads"],
            window_size=HTSAT["window_size"],
            config=audio_cfg,
            enable_fusion=enable_fusion,
            fusion_type=fusion_type,
        )

    model_mod.RobertaModel = TinyRoberta
    model_mod.create_htsat_model = tiny_htsat
    hook.RobertaTokenizer = TinyTokenizer
    factory._MODEL_CONFIGS["HTSAT-micro"] = MODEL_CFG
    return laion_clap


def build(laion_clap, fused: bool):
    clap = laion_clap.CLAP_Module(enable_fusion=fused, device="cpu", amodel="HTSAT-micro", tmodel="roberta")
    m = clap.model
    m.text_projection = torch.nn.Sequential(
        torch.nn.Linear(TEXT["hidden_size"], JOINT), torch.nn.ReLU(), torch.nn.Linear(JOINT, JOINT)
    )
    return clap


def recorder(clap):
    """Forward hooks keeping what the audio tower received: the unfused log-mel (after torchlibrosa, before
    bn0) or the fused ``mel_fusion`` and ``longer``."""
    seen = []
    branch = clap.model.audio_branch

    def pre(_module, args):
        x = args[0]
        if "mel_fusion" in x:
            seen.append({"features": x["mel_fusion"].clone(), "longer": x["longer"].clone()})

    def logmel(_module, _args, out):
        seen.append({"features": out.clone()})

    branch.register_forward_pre_hook(pre)
    branch.logmel_extractor.register_forward_hook(logmel)
    return seen


def run(clap, waves, seen, name, out):
    """``get_audio_embedding_from_data`` on ``waves`` (a list); features and embeddings into ``out``; an
    exception of the original is recorded instead (its message)."""
    seen.clear()
    np.random.seed(SEED)  # the fused path draws its chunks from numpy's global state
    try:
        emb = clap.get_audio_embedding_from_data(x=[w.copy() for w in waves])
    except Exception as err:  # noqa: BLE001 - the original's failure is a recorded fact, not our error
        out[f"{name}_error"] = np.array(f"{type(err).__name__}: {err}")
        print(f"{name}: the original fails: {type(err).__name__}: {err}")
        return
    feats = torch.cat([s["features"] for s in seen if "features" in s])
    out[f"{name}_embedding"] = np.asarray(emb, np.float32)
    out[f"{name}_features"] = feats.numpy().astype(np.float32)
    if seen and "longer" in seen[0]:
        out[f"{name}_longer"] = torch.cat([s["longer"] for s in seen]).numpy()


def fix_numpy() -> str:
    """The original crops a clip longer than 10 s with ``np.random.integers(0, overflow + 1)``
    (training/data.py, ``get_audio_features``), which numpy does not have: every clip over 10 s fails with
    AttributeError. The one change made to the original's behaviour: that call becomes
    ``np.random.randint`` (the same half-open range from numpy's global state)."""
    if hasattr(np.random, "integers"):
        return "numpy has np.random.integers"
    np.random.integers = np.random.randint
    return "AttributeError: module 'numpy.random' has no attribute 'integers' (patched to randint)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--ref", required=True, type=Path, help="the LAION-AI/CLAP checkout (its src/ is imported)"
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    numpy_fix = fix_numpy()
    from tests.models.clap_dir import make_clap_dir  # the tiny tokenizer only (no sed import)

    with tempfile.TemporaryDirectory() as tmp:
        tokdir = make_clap_dir(Path(tmp) / "tok", small=True)
        laion_clap = patch_package(args.ref.resolve(), tokdir)
        out, manifest_entries = {}, None
        waves = [common.signal(s, RATE, 0)[0] for s in SECONDS]
        for fused in (True, False):  # the unfused keys are the fused ones less the fusion modules
            tag = "fused" if fused else "unfused"
            clap = build(laion_clap, fused)
            state = clap.model.state_dict()
            if fused:
                manifest_entries = [entry(k, v) for k, v in state.items()]
                filled = common.tensors_from({"seed": SEED, "tensors": manifest_entries})
            assert set(state) <= set(filled), sorted(set(state) - set(filled))[:3]
            release = {k: (v if derived(k) else filled[k]) for k, v in state.items()}
            prefix = "" if fused else "module."
            path = Path(tmp) / f"{tag}.pt"
            torch.save(
                {
                    "epoch": 1,
                    "name": f"tiny-{tag}",
                    "state_dict": {prefix + k: v for k, v in release.items()},
                },
                path,
            )
            assert torch.load(path, weights_only=True)["epoch"] == 1  # the layout loads without pickled code
            clap.load_ckpt(str(path), verbose=False)
            clap.model.eval()
            seen = recorder(clap)
            for w, s in zip(waves, SECONDS):
                run(clap, [w], seen, f"{tag}_{s:g}s", out)
            run(clap, waves, seen, f"{tag}_list", out)
            tokens = clap.tokenizer(PROMPTS)
            out[f"{tag}_text_input_ids"] = tokens["input_ids"].numpy()
            out[f"{tag}_text_attention_mask"] = tokens["attention_mask"].numpy()
            out[f"{tag}_text_embedding"] = np.asarray(clap.get_text_embedding(PROMPTS), np.float32)
            out[f"{tag}_keys"] = np.array(sorted(state))
    # a fused clip not longer than 10 s carries the same mel four times: keep one (the test repeats it)
    for key in ("fused_3s_features", "fused_10s_features"):
        f = out[key]
        assert all(np.array_equal(f[:, 0], f[:, c]) for c in range(4)), key
        out[key] = f[:, :1]
    # the same clips as one list give the same features as alone (the chunks of the 15-s clip too: numpy's
    # state is seeded before each call): keep the list's embeddings only
    for tag in ("unfused", "fused"):
        ref = np.concatenate([out[f"{tag}_{s:g}s_features"][:, :1] for s in SECONDS])
        assert np.array_equal(out.pop(f"{tag}_list_features")[:, :1], ref), tag
    commit = (args.ref / "COMMIT").read_text().strip()  # written when the archive was extracted
    common.save_manifest(
        HERE / "laion_weights.json",
        SEED,
        manifest_entries,
        model_cfg=MODEL_CFG,
        htsat=HTSAT,
        text=TEXT,
        prompts=PROMPTS,
        seconds=list(SECONDS),
        rate=RATE,
        commit=commit,
        long_clip_quirk=numpy_fix,
    )
    np.savez_compressed(HERE / "laion_outputs.npz", **out)
    for k, v in out.items():
        print(k, v.shape, v.dtype)


if __name__ == "__main__":
    main()
