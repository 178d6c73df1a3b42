"""Property-based fuzz tests of the checkpoint loader.

Targets: ``.pt``, ``.safetensors`` and Lightning ``.ckpt`` sed checkpoints (an AST and a CNN), an
original AST ``.pth`` and a Hugging Face directory, each mutated byte-wise (bit flips, truncation,
insertions, duplications; positions drawn near every region boundary of the container) and
structurally (valid containers with wrong contents: descriptions, kwargs, weights, safetensors
headers, HF configs, pickles that reference arbitrary globals).

The invariant: ``load_model`` either returns a model whose forward runs on a short waveform, or
raises a :class:`~sed.errors.CheckpointError` whose one-line message names the file; never another
exception, never a hang (an alarm), never a large allocation (the peak RSS of each example), and a
pickle never runs code. ``sedkit classify --checkpoint BAD`` exits 2 with one ``error:`` line.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import shutil
import struct
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import currently_in_test_context, event, given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from sed.checkpoint import read_checkpoint, save_model
from sed.cli.main import main
from sed.errors import CheckpointError
from sed.models import create_model, list_models
from sed.models.loading import load_model
from tests.fuzz.strategies import check_error, mutants, near, watchdog

LABELS = ["dog", "rain", "siren"]
#: a loaded example may grow the peak RSS by this much at most (the seeds' models are ~1 MB)
MAX_GROWTH_KIB = 1 << 20


# ---------------------------------------------------------------------- the invariant
def _event(outcome: str) -> None:
    if currently_in_test_context():  # shown by --hypothesis-show-statistics
        event(outcome)


def assert_loads_or_refuses(path: Path, refused: str | None = None) -> str:
    """``load_model(path)`` gives a model whose forward runs, or a one-line CheckpointError naming
    ``path`` (containing ``refused`` if given, which then must happen)."""
    with watchdog(60, MAX_GROWTH_KIB), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's pickle-protocol notes, re-initialised heads
        try:
            model, desc = load_model(path)
        except CheckpointError as err:
            check_error(err, path)
            assert refused is None or refused in str(err), str(err)
            _event("refused")
            return str(err)
        assert refused is None, f"{path} loaded; expected: {refused}"
        wave = 0.1 * torch.randn(1, 4000)
        with torch.no_grad():
            out = model(wave)
        assert out.shape == (1, model.num_classes) and out.dtype == torch.float32
        assert desc["model_name"] in list_models()
        _event("loaded")
        return "loaded"


# ---------------------------------------------------------------------- seeds
def _ast(**kw):
    torch.manual_seed(0)
    return create_model("ast_micro", num_classes=3, input_tdim=32, depth=1, labels=LABELS, **kw).eval()


def _original_layout(model) -> dict:
    """An ASTModel's weights as the original AST repository writes them."""
    sd = {f"module.v.{k}": v for k, v in model.state_dict().items() if not k.startswith("head.")}
    sd.update({f"module.mlp_head.{k}": v for k, v in model.head.state_dict().items()})
    return sd


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Valid files of every target, and a scratch folder for the mutants."""
    root = tmp_path_factory.mktemp("seeds")
    ast, cnn = _ast(), create_model("cnn_tiny", num_classes=3, depth=2, input_tdim=40, labels=LABELS).eval()
    out = {
        "pt": save_model(root / "ast.pt", ast),
        "safetensors": save_model(root / "ast.safetensors", ast),
        "cnn": save_model(root / "cnn.pt", cnn),
    }
    desc, state = read_checkpoint(out["pt"])
    torch.save(
        {
            "epoch": 1,
            "sed_meta": {**desc, "state_dict_prefix": "model."},
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "optimizer_states": [],
        },
        root / "last.ckpt",
    )
    out["ckpt"] = root / "last.ckpt"
    out["pth"] = root / "audioset_10_10_0.4593.pth"
    torch.save(
        _original_layout(create_model("ast_micro", num_classes=3, input_tdim=128, depth=1)), out["pth"]
    )
    out["scratch"] = tmp_path_factory.mktemp("mutants")
    return out


@pytest.fixture(scope="module")
def hf_seed(tmp_path_factory):
    """A random 1-layer Hugging Face AST directory written by transformers (config, weights, preprocessor)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ASTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_length=32,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    path = tmp_path_factory.mktemp("hf_seed")
    torch.manual_seed(0)
    transformers.ASTForAudioClassification(cfg).save_pretrained(path)
    transformers.ASTFeatureExtractor(max_length=32).save_pretrained(path)
    return path


def test_seeds_load(seeds, hf_seed):
    for name in ("pt", "safetensors", "cnn", "ckpt", "pth"):
        assert assert_loads_or_refuses(seeds[name]) == "loaded", name
    assert assert_loads_or_refuses(hf_seed) == "loaded"


# ---------------------------------------------------------------------- byte-level mutations
def _boundaries(data: bytes) -> list[int]:
    """Offsets where the container's regions start and end: zip entries (local header, data) and
    its central directory, or the safetensors length, JSON header and tensor data (or a JSON file's ends)."""
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            out = [z.start_dir, len(data) - 22]
            for i in z.infolist():
                start = i.header_offset + 30 + len(i.filename) + len(i.extra)
                out += [i.header_offset, start, start + i.compress_size]
            return out
    try:
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + n])
        return [0, 8, 8 + n, len(data)] + [
            8 + n + e["data_offsets"][0] for k, e in header.items() if k != "__metadata__"
        ]
    except Exception:  # noqa: BLE001 - a JSON file, or a mutant already
        return [0, len(data)]


def byte_mutants(data: bytes):
    """``data`` after 1-3 byte mutations, at positions drawn near the container's region boundaries."""
    return mutants(data, near(_boundaries(data), len(data)))


def _write(seeds, name: str, content: bytes) -> Path:
    path = seeds["scratch"] / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("target", ["pt", "safetensors", "ckpt", "cnn", "pth"])
@given(data=st.data())
def test_byte_mutations(seeds, target, data):
    seed = seeds[target]
    mutant = data.draw(byte_mutants(seed.read_bytes()), label="mutant")
    assert_loads_or_refuses(_write(seeds, "mutant" + seed.suffix, mutant))


def test_truncation_at_every_region(seeds):
    """Deterministic: every file cut at each region boundary (and 1-3 bytes either side) is refused."""
    for target in ("pt", "safetensors", "ckpt", "cnn"):
        data = seeds[target].read_bytes()
        for b in sorted(
            {min(max(b + d, 0), len(data) - 1) for b in _boundaries(data) for d in (-3, -1, 0, 1, 3)}
        ):
            assert_loads_or_refuses(_write(seeds, "cut" + seeds[target].suffix, data[:b]), refused="")


# ---------------------------------------------------------------------- structured mutations
WEIRD = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            False,
            -1,
            0,
            1,
            2,
            2**31,
            10**12,
            2**63,
            -(2**63),
            10**30,
            0.5,
            -1e300,
            1e308,
            math.nan,
            math.inf,
            -math.inf,
            "",
            "16000",
            "ast_micro",
            [],
            [1, 2],
            {},
            {"a": 1},
            [[[[]]]],
        ]
    ).map(copy.deepcopy),  # a fresh copy: mutants never share (and grow) one value
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.lists(st.integers(-2, 2**40), max_size=3),
)
SHAPE = st.lists(st.integers(0, 5), max_size=4).map(tuple)
DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int8,
    torch.bool,
    torch.complex64,
    torch.uint8,
    torch.float8_e4m3fn,
]


def state_ops(keys, plain: bool):
    """Mutations of a state dict: missing, extra, reshaped, retyped or NaN/inf tensors; unless
    ``plain`` (safetensors can only hold str -> tensor), also non-tensor values and non-str keys."""
    key = st.sampled_from(sorted(keys))
    ops = [
        st.tuples(st.just("drop"), key),
        st.tuples(st.just("add"), st.text(max_size=12), SHAPE),
        st.tuples(st.just("reshape"), key, SHAPE),
        st.tuples(st.just("dtype"), key, st.sampled_from(DTYPES)),
        st.tuples(st.just("poison"), key, st.sampled_from([math.nan, math.inf, -math.inf])),
    ]
    if not plain:
        ops += [
            st.tuples(st.just("value"), key, WEIRD),
            st.tuples(st.just("int_key"), st.integers()),
            st.tuples(st.just("replace"), WEIRD),
        ]
    return st.one_of(ops)


def desc_ops(desc: dict):
    """Mutations of a sed description: missing keys, wrong types, absurd kwargs, unknown models."""
    key, kwarg = st.sampled_from(sorted(desc)), st.sampled_from(sorted(desc["model_kwargs"]))
    name = st.one_of(st.sampled_from(list_models()), st.text(max_size=10), WEIRD)
    return st.one_of(
        st.tuples(st.just("drop"), key),
        st.tuples(st.just("set"), key | st.text(max_size=8), WEIRD),
        st.tuples(st.just("kwarg_drop"), kwarg),
        st.tuples(st.just("kwarg_set"), kwarg | st.text(max_size=8), WEIRD),
        st.tuples(st.just("set"), st.just("model_kwargs"), WEIRD),
        st.tuples(st.just("set"), st.just("model_name"), name),
        st.tuples(st.just("set"), st.just("labels"), st.lists(WEIRD | st.text(max_size=4), max_size=4)),
        st.tuples(st.just("replace"), WEIRD),
    )


def mutate_state(state: dict, ops) -> object:
    state = dict(state)
    for kind, *arg in ops:
        if not isinstance(state, dict):
            break
        if kind in ("reshape", "dtype", "poison") and not isinstance(state.get(arg[0]), torch.Tensor):
            continue
        if kind == "drop":
            state.pop(arg[0], None)
        elif kind == "add":
            state[arg[0]] = torch.randn(arg[1])
        elif kind == "reshape":
            state[arg[0]] = 0.02 * torch.randn(arg[1])
        elif kind == "dtype":
            state[arg[0]] = state[arg[0]].to(arg[1])
        elif kind == "poison" and state[arg[0]].numel():
            state[arg[0]] = state[arg[0]].double().clone()
            state[arg[0]].view(-1)[0] = arg[1]
        elif kind == "value":
            state[arg[0]] = arg[1]
        elif kind == "int_key":
            state[arg[0]] = torch.zeros(1)
        elif kind == "replace":
            state = arg[0]
    return state


def mutate_desc(desc: dict, ops) -> object:
    desc = {**desc, "model_kwargs": dict(desc["model_kwargs"])}
    for kind, *arg in ops:
        if not isinstance(desc, dict):
            break
        kwargs = desc.get("model_kwargs")
        if kind == "drop":
            desc.pop(arg[0], None)
        elif kind == "set":
            desc[arg[0]] = arg[1]
        elif kind == "kwarg_drop" and isinstance(kwargs, dict):
            kwargs.pop(arg[0], None)
        elif kind == "kwarg_set" and isinstance(kwargs, dict):
            kwargs[arg[0]] = arg[1]
        elif kind == "replace":
            desc = arg[0]
    return desc


def _container(target: str, desc, state, path: Path) -> None:
    if target == "safetensors":
        text = json.dumps(desc) if not isinstance(desc, bytes) else desc.decode("utf-8", "replace")
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"sed": text})
    elif target == "ckpt":
        prefixed = (
            {f"model.{k}" if isinstance(k, str) else k: v for k, v in state.items()}
            if isinstance(state, dict)
            else state
        )
        torch.save({"epoch": 1, "sed_meta": desc, "state_dict": prefixed}, path)
    else:
        torch.save({"sed": desc, "state_dict": state}, path)


@pytest.mark.parametrize("target", ["pt", "safetensors", "ckpt", "cnn"])
@given(data=st.data())
def test_structured_mutations(seeds, target, data):
    desc, state = read_checkpoint(seeds[target])
    plain = target == "safetensors"
    d_ops = data.draw(st.lists(desc_ops(desc), max_size=3), label="description")
    s_ops = data.draw(
        st.lists(state_ops(state, plain), max_size=2 if d_ops else 3, min_size=0 if d_ops else 1),
        label="weights",
    )
    new_desc, new_state = mutate_desc(desc, d_ops), mutate_state(state, s_ops)
    if plain and data.draw(st.booleans(), label="metadata not an object"):
        new_desc = data.draw(st.one_of(st.binary(max_size=20), WEIRD.map(json.dumps)), label="sed metadata")
        new_desc = new_desc if isinstance(new_desc, bytes) else new_desc.encode()
    path = seeds["scratch"] / f"structured{seeds[target].suffix}"
    _container(target, new_desc, new_state, path)
    assert_loads_or_refuses(path)


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"num_classes": -1}, "num_classes must be >= 1"),
        ({"num_classes": 10**12}, "far larger than its weights"),
        ({"embed_dim": 0}, "cannot build ast_micro"),
        ({"embed_dim": 2**40, "num_heads": 1}, "far larger than its weights"),
        ({"depth": 10**9}, "far larger than its weights"),
        ({"depth": 10**5}, "cannot build ast_micro: it asks for"),
        ({"input_tdim": 2**62}, "cannot build ast_micro"),
        ({"mlp_ratio": 1e30}, "cannot build ast_micro"),
        ({"fstride": 0}, "cannot build ast_micro"),
        ({"pretrained": "ast-audioset-0.4593"}, "may not name pretrained weights"),
        ({"sample_rate": 10**12}, "cannot build ast_micro"),
    ],
)
def test_absurd_kwargs_are_refused_before_allocating(seeds, kwargs, reason):
    desc, state = read_checkpoint(seeds["pt"])
    path = seeds["scratch"] / "absurd.pt"
    torch.save(
        {"sed": {**desc, "model_kwargs": {**desc["model_kwargs"], **kwargs}}, "state_dict": state}, path
    )
    assert_loads_or_refuses(path, refused=reason)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("labels", [1, 2, 3], "labels must be strings"),
        ("clip_samples", -5, "clip_samples -5 is not a clip length"),
        ("sample_rate", "16000", "'sample_rate' is '16000', not a int"),
        ("model_name", 7, "'model_name' is 7, not a str"),
        ("model_kwargs", [1], "'model_kwargs' is [1], not a dict"),
        ("multi_label", "no", "'multi_label' is 'no', not a bool"),
        ("clip_samples", 123, "clip_samples 123 contradicts"),
    ],
)
def test_description_fields_are_checked(seeds, field, value, reason):
    desc, state = read_checkpoint(seeds["pt"])
    path = seeds["scratch"] / "field.pt"
    torch.save({"sed": {**desc, field: value}, "state_dict": state}, path)
    assert_loads_or_refuses(path, refused=reason)


# ---------------------------------------------------------------------- safetensors headers that lie
def _split_safetensors(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


@given(data=st.data())
def test_safetensors_headers_that_lie(seeds, data):
    header, body = _split_safetensors(seeds["safetensors"].read_bytes())
    names = sorted(k for k in header if k != "__metadata__")
    big = st.one_of(
        st.integers(-1, 2**64 - 1), st.sampled_from([0, 1, len(body), len(body) + 1, 2**31, 2**63])
    )
    field = st.one_of(
        st.tuples(
            st.just("dtype"),
            st.sampled_from(["F32", "F16", "BF16", "I64", "BOOL", "C64", "F8_E4M3", "X", ""]),
        ),
        st.tuples(st.just("shape"), st.lists(big, max_size=4)),
        st.tuples(st.just("shape"), WEIRD),
        st.tuples(st.just("data_offsets"), st.lists(big, min_size=2, max_size=2)),
        st.tuples(st.just("data_offsets"), WEIRD),
    )
    lie = st.one_of(
        st.tuples(st.just("entry"), st.sampled_from(names), field),
        st.tuples(st.just("metadata"), WEIRD | st.dictionaries(st.text(max_size=4), WEIRD, max_size=2)),
        st.tuples(st.just("body"), st.integers(0, len(body))),
    )
    lies = data.draw(st.lists(lie, min_size=1, max_size=3), label="lies")
    length = data.draw(st.one_of(st.none(), big), label="header length")
    header = {k: dict(v) if isinstance(v, dict) else v for k, v in header.items()}
    for kind, *arg in lies:
        if kind == "entry":
            header[arg[0]][arg[1][0]] = arg[1][1]
        elif kind == "metadata":
            header["__metadata__"] = arg[0]
        else:
            body = body[: arg[0]]
    text = json.dumps(header).encode()
    blob = struct.pack("<Q", len(text) if length is None else length % 2**64) + text + body
    assert_loads_or_refuses(_write(seeds, "lying.safetensors", blob))


# ---------------------------------------------------------------------- Hugging Face directories
HF_KEYS = [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "patch_size",
    "frequency_stride",
    "time_stride",
    "max_length",
    "num_mel_bins",
    "id2label",
    "layer_norm_eps",
    "hidden_act",
    "model_type",
    "qkv_bias",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
]
PRE_KEYS = ["mean", "std", "sampling_rate", "do_normalize"]


def _hf_mutant(seed: Path, dest: Path, data) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(seed, dest)
    files = {"config.json": HF_KEYS, "preprocessor_config.json": PRE_KEYS}
    name = st.sampled_from(sorted(files))
    ops = data.draw(
        st.lists(
            st.one_of(
                st.tuples(
                    st.just("set"),
                    name,
                    st.sampled_from(HF_KEYS + PRE_KEYS),
                    WEIRD | st.dictionaries(WEIRD.map(str), WEIRD),
                ),
                st.tuples(st.just("drop"), name, st.sampled_from(HF_KEYS + PRE_KEYS)),
                st.tuples(
                    st.just("text"), name, st.binary(max_size=24) | WEIRD.map(json.dumps).map(str.encode)
                ),
                st.tuples(
                    st.just("bytes"), st.sampled_from(sorted(files) + ["model.safetensors"]), st.data()
                ),
                st.tuples(
                    st.just("weights"), st.sampled_from(["model.safetensors", "pytorch_model.bin"]), st.data()
                ),
                st.tuples(st.just("remove"), st.sampled_from(sorted(files) + ["model.safetensors"])),
            ),
            min_size=1,
            max_size=3,
        ),
        label="HF mutations",
    )
    for kind, file, *arg in ops:
        path = dest / file
        if kind in ("set", "drop") and path.is_file():
            try:
                cfg = json.loads(path.read_text())
            except ValueError:
                continue
            if isinstance(cfg, dict):
                cfg.pop(arg[0], None) if kind == "drop" else cfg.__setitem__(arg[0], arg[1])
                path.write_text(json.dumps(cfg))
        elif kind == "text":
            path.write_bytes(arg[0])
        elif kind == "bytes" and path.is_file():
            path.write_bytes(arg[0].draw(byte_mutants(path.read_bytes()), label=f"{file} bytes"))
        elif kind == "weights" and (dest / "model.safetensors").is_file():
            state = load_file(str(seed / "model.safetensors"))
            new = mutate_state(state, arg[0].draw(st.lists(state_ops(state, True), min_size=1, max_size=2)))
            (dest / "model.safetensors").unlink()
            if file == "model.safetensors":
                save_file({k: v.contiguous() for k, v in new.items()}, str(path))
            else:
                torch.save(new, path)
        elif kind == "remove":
            path.unlink(missing_ok=True)
    return dest


@given(data=st.data())
def test_hf_directory_mutations(seeds, hf_seed, data):
    assert_loads_or_refuses(_hf_mutant(hf_seed, seeds["scratch"] / "hf", data))


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("hidden_size", "768", "hidden_size is '768', not a int >= 1"),
        ("num_hidden_layers", -1, "num_hidden_layers is -1, not a int >= 1"),
        ("patch_size", 0, "patch_size is 0"),
        ("frequency_stride", 0, "frequency_stride is 0"),
        ("time_stride", 0, "time_stride is 0"),
        ("id2label", ["dog", "rain", "siren"], "id2label is"),
        ("id2label", {"a": "dog"}, "are not class indices"),
        ("hidden_size", 10**9, "far larger than its weights"),
    ],
)
def test_hf_config_types_are_checked(seeds, hf_seed, key, value, reason):
    dest = seeds["scratch"] / "hf_cfg"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(hf_seed, dest)
    cfg = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**cfg, key: value}))
    assert_loads_or_refuses(dest, refused=reason)


# ---------------------------------------------------------------------- pickles that reference globals
class _Planted:
    """Touches its marker when constructed: proof that an unpickler ran code."""

    def __init__(self, marker: str):
        Path(marker).touch()


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


PAYLOADS = {
    "os.system": lambda m: (os.system, (f"touch {m}",)),
    "builtins.exec": lambda m: (exec, (f"open({m!r}, 'w').close()",)),
    "builtins.eval": lambda m: (eval, (f"open({m!r}, 'w')",)),
    "builtins.open": lambda m: (open, (m, "w")),
    "subprocess.Popen": lambda m: (subprocess.Popen, (["touch", m],)),
    "test class": lambda m: (_Planted, (m,)),
    "Path.touch": lambda m: (Path.touch, (Path(m),)),
    "torch.nn.Linear": lambda m: (torch.nn.Linear, (2, 2)),
}


def _evil(seed_desc: dict, state: dict, payload, where: str) -> dict:
    obj = {"sed": {**seed_desc, "model_kwargs": dict(seed_desc["model_kwargs"])}, "state_dict": dict(state)}
    if where == "top":
        obj["x"] = payload
    elif where == "kwargs":
        obj["sed"]["model_kwargs"]["num_classes"] = payload
    elif where == "weights":
        obj["state_dict"]["head.1.bias"] = payload
    else:
        obj = payload
    return obj


def test_pickle_payload_is_real(tmp_path):
    """The payloads do run code when unpickled without weights_only: their refusal is what the fuzz checks."""
    marker = tmp_path / "ran"
    torch.save(_Reduce(*PAYLOADS["test class"](str(marker))), tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@given(
    name=st.sampled_from(sorted(PAYLOADS)),
    where=st.sampled_from(["top", "kwargs", "weights", "whole"]),
    legacy=st.booleans(),
)
def test_pickled_globals_are_refused_without_running(seeds, name, where, legacy):
    desc, state = read_checkpoint(seeds["pt"])
    marker = seeds["scratch"] / "pwned"
    marker.unlink(missing_ok=True)
    path = seeds["scratch"] / "evil.pt"
    torch.save(
        _evil(desc, state, _Reduce(*PAYLOADS[name](str(marker))), where),
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    assert_loads_or_refuses(path, refused="refused")
    assert not marker.exists(), f"{name} ran"


# ---------------------------------------------------------------------- the CLI
BAD = {
    "junk": lambda s, p: p.write_bytes(b"not a checkpoint"),
    "truncated": lambda s, p: p.write_bytes(s["pt"].read_bytes()[:5000]),
    "evil pickle": lambda s, p: torch.save({"x": _Reduce(os.system, ("true",))}, p),
    "unknown model": lambda s, p: torch.save(
        {"sed": {"model_name": "nope", "model_kwargs": {}}, "state_dict": {}}, p
    ),
    "absurd kwargs": lambda s, p: _container(
        "pt",
        {**(d := read_checkpoint(s["pt"])[0]), "model_kwargs": {**d["model_kwargs"], "num_classes": 10**12}},
        read_checkpoint(s["pt"])[1],
        p,
    ),
    "wrong shapes": lambda s, p: _container(
        "pt", read_checkpoint(s["pt"])[0], {k: torch.zeros(2) for k in read_checkpoint(s["pt"])[1]}, p
    ),
    "sed metadata not JSON": lambda s, p: save_file({"w": torch.zeros(1)}, str(p), metadata={"sed": "{oops"}),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_classify_exits_2_with_one_line(seeds, write_wav, capsys, kind):
    wav = write_wav("a.wav", 0.1 * torch.randn(8000).numpy())
    bad = seeds["scratch"] / ("bad.safetensors" if "metadata" in kind else "bad.pt")
    BAD[kind](seeds, bad)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["classify", str(wav), "--checkpoint", str(bad), "--device", "cpu"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1, (rc, err)
    assert err[0].startswith("error: ") and str(bad) in err[0], err
