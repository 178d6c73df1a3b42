"""Property-based fuzz tests of the ONNX loader (:class:`sed.inference.runtime.OnnxModel`).

Targets: a tiny graph in the layout sed exports (``waveform [batch, samples]`` -> ``logits``,
``embedding``; built with ``onnx.helper`` in :func:`tests.export.fixtures.tiny_graph`, so an example
takes milliseconds) with its input and output dims and element types drawn (fixed, dynamic, 0,
negative, huge; every tensor type), its ``sed`` metadata mutated (fields missing or of the wrong
type, absurd input bounds, not JSON, not an object), and its serialised bytes mutated or truncated.

The invariant: the loader gives a model whose logits and embedding of a short clip are float32
``[batch, width]`` (the width its labels say), or raises a :class:`~sed.errors.CheckpointError` whose one
line names the file; never another exception, a hang or a large allocation (:func:`outcome`).
"""

from __future__ import annotations

import copy
import json
import math

import onnx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sed.errors import CheckpointError
from sed.inference.runtime import OnnxModel
from tests.export.fixtures import tiny_description, tiny_graph
from tests.fuzz.strategies import STEMS, mutants, outcome

#: dims a graph may declare: dynamic (a name, or none), possible sizes, and impossible ones
DIMS = st.one_of(
    st.just("n"),
    st.none(),
    st.sampled_from([0, 1, 2, 3, -1, -7, 399, 400, 8000, 1 << 20, 2**40]),
    st.integers(-3, 5000),
)
#: every ONNX tensor element type (float and otherwise)
TYPES = st.sampled_from([v for k, v in onnx.TensorProto.DataType.items() if k != "UNDEFINED"])
WEIRD = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            False,
            -1,
            0,
            1,
            3,
            2**31,
            2**63,
            10**30,
            0.5,
            1e308,
            math.nan,
            math.inf,
            "",
            "x",
            [],
            [1],
            [400, 8000],
            [8000, 400],
            [0, 5],
            [400, 2**40],
            [1.5, 2],
            {},
            {"a": 1},
        ]
    ).map(copy.deepcopy),
    st.integers(),
    st.text(max_size=6),
    st.lists(st.integers(-2, 2**34), max_size=3),
)
SHORT_CLIP = 3000


def _mutated_description(data) -> dict | object:
    desc = tiny_description()
    for _ in range(data.draw(st.integers(0, 3), label="description edits")):
        key = data.draw(st.sampled_from(sorted(desc) + ["extra"]), label="key")
        if data.draw(st.booleans(), label="drop"):
            desc.pop(key, None)
        else:
            desc[key] = data.draw(WEIRD, label=key)
    return desc


def assert_loads_or_refuses(path) -> str:
    """``OnnxModel(path)`` scores a short clip as promised, or refuses with one line naming ``path``."""

    def load_and_run():
        model = OnnxModel(path)
        wave = 0.1 * torch.randn(2, SHORT_CLIP, generator=torch.Generator().manual_seed(0))
        lengths = torch.tensor([SHORT_CLIP, SHORT_CLIP // 2])
        for out in (model(wave, lengths), model.embed(wave, lengths)):
            assert out.dtype == torch.float32 and out.dim() == 2 and out.shape[0] == 2, out.shape
        assert model(wave).shape == (2, model.num_classes) and model.num_classes >= 1
        return "loaded"

    got = outcome(load_and_run, path)
    if isinstance(got, Exception):
        assert isinstance(got, CheckpointError), repr(got)
        return "refused"
    return got


def _save(scratch, proto_or_bytes, stem: str = "g"):
    path = scratch() / f"{stem}.onnx"
    data = proto_or_bytes if isinstance(proto_or_bytes, bytes) else proto_or_bytes.SerializeToString()
    path.write_bytes(data)
    return path


def test_the_seed_loads(scratch):
    assert assert_loads_or_refuses(_save(scratch, tiny_graph())) == "loaded"
    assert assert_loads_or_refuses(_save(scratch, tiny_graph(batch=1))) == "loaded"


@given(
    batch=DIMS,
    samples=DIMS,
    classes=st.integers(1, 7),
    input_type=TYPES,
    logits_type=TYPES,
    embedding_type=TYPES,
    sum_batch=st.sampled_from([None, None, "keep", "drop"]),
    opset=st.sampled_from([13, 18, 21]),
)
def test_graph_shapes_and_types(
    scratch, batch, samples, classes, input_type, logits_type, embedding_type, sum_batch, opset
):
    desc = tiny_description(labels=[f"c{i}" for i in range(classes)])
    try:
        proto = tiny_graph(
            desc,
            batch=batch,
            samples=samples,
            classes=classes,
            input_type=input_type,
            logits_type=logits_type,
            embedding_type=embedding_type,
            sum_batch=sum_batch,
            opset=opset,
        )
    except (ValueError, TypeError):  # onnx.helper refuses to build it (a dim it cannot declare)
        return
    assert_loads_or_refuses(_save(scratch, proto))


@given(data=st.data(), stem=STEMS)
def test_metadata(scratch, data, stem):
    proto = tiny_graph(batch=data.draw(st.sampled_from(["n", 1, 2]), label="batch"))
    kind = data.draw(st.sampled_from(["fields", "json", "props"]), label="kind")
    if kind == "fields":
        value = json.dumps(_mutated_description(data))
    elif kind == "json":
        value = data.draw(
            st.one_of(
                st.text(max_size=20),
                st.sampled_from(
                    [
                        "[]",
                        "null",
                        "1",
                        '"x"',
                        "{",
                        '{"model_name": 1}',
                        "[" * 5000 + "]" * 5000,
                        '{"a": NaN}',
                    ]
                ),
            ),
            label="json",
        )
    else:
        value = json.dumps(tiny_description())
    del proto.metadata_props[:]
    for key in (
        data.draw(st.lists(st.sampled_from(["sed", "other", ""]), max_size=3), label="keys")
        if kind == "props"
        else ["sed"]
    ):
        proto.metadata_props.add(key=key, value=value)
    assert_loads_or_refuses(_save(scratch, proto, stem))


@pytest.fixture(scope="module")
def seed_bytes():
    return tiny_graph().SerializeToString()


@given(data=st.data())
def test_bytes(scratch, seed_bytes, data):
    """The serialised graph after byte mutations (flips, insertions, deletions, duplications, truncation)."""
    assert_loads_or_refuses(
        _save(scratch, data.draw(mutants(seed_bytes, st.integers(0, len(seed_bytes))), label="bytes"))
    )


def test_truncation_everywhere(scratch, seed_bytes):
    """Deterministic: the graph cut at every 7th byte is refused (or, cut only in its trailing metadata,
    loads)."""
    for n in range(0, len(seed_bytes), 7):
        assert_loads_or_refuses(_save(scratch, seed_bytes[:n]))
