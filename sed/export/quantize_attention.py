"""Attention blocks of an exported ViT as ONNX Runtime's fused ``com.microsoft.Attention``, so that int8
quantisation makes them ``QAttention`` (``sedkit export --precision int8 --int8-attention fused``).

timm's self-attention (``sed.models.transformer.Attention``: one ``qkv`` linear layer) is exported at
opset 23 as::

    x -> MatMul(W[D, 3D]) -> Add(b[3D]) -> Reshape[B, N, 3, H, d] -> Transpose(2, 0, 3, 1, 4)
      -> three Slice+Squeeze (or one Split+Squeeze) -> q, k, v [B, H, N, d] -> Attention (ai.onnx, 23)
      -> Transpose(0, 2, 1, 3) -> Reshape[B, N, D]

and timm's packed ``qkv`` weight is exactly ``com.microsoft.Attention``'s ``[D, 3D]`` weight (queries,
keys, values, each head-major), so the whole block is one node ``Attention(x, W, b, num_heads=H)`` ->
``[B, N, D]``. :func:`fuse_attention` rewrites every block that matches (counted); ONNX Runtime's
``quantize_dynamic`` then turns each into ``QAttention``: the input quantised once, the q/k/v
projection one int8 GEMM, the attention in its kernel. A block of another form (AST's last block,
which computes queries for the two pooled tokens only; BEATs' attention with its relative position
bias) stays as exported, its linear layers int8 as before.

Why not the other paths (measured on AST-Base, see docs/benchmarks.md): ONNX Runtime's transformer
optimizer (``onnxruntime.transformers.optimizer``, model types ``vit`` and ``bert``) fuses no block of
timm's fused-qkv pattern at opset 18 or 23; ``QAttention``'s kernel computes Q·Kᵀ and P·V in fp32 (it
derives from the fp32 attention base), so what it saves is the separate projection, transposes and
splits; and ``quantize_dynamic(..., MatMulConstBOnly=False)`` on the decomposed products (opset 18:
activation x activation ``MatMulInteger``) is no faster on an AVX2 CPU and quantises the softmax
probabilities per tensor (15 % mean relative error of P·V).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ATTENTION_DOMAIN", "fuse_attention"]

ATTENTION_DOMAIN = "com.microsoft"


class _Graph:
    """Producers, consumers and constant values of a graph, for pattern matching."""

    def __init__(self, model):
        from onnx import numpy_helper

        g = model.graph
        self.model = model
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {i.name: i for i in g.initializer}
        self.consts = {}
        for n in g.node:  # Constant nodes' values
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.numpy_helper = numpy_helper

    def value(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return self.numpy_helper.to_array(self.inits[name])
        return self.consts.get(name)

    def only_consumer(self, name: str, op_type: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def source(self, name: str, op_type: str):
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _qkv_index(g: _Graph, squeeze) -> tuple[int, object] | None:
    """(0, 1 or 2: which of q, k, v, the Transpose it comes from) for ``Squeeze(Slice(t, i, i + 1, axis 0))``
    or ``Squeeze(Split(t, axis 0)[i])``."""
    if squeeze is None or squeeze.op_type != "Squeeze":
        return None
    axes = g.value(squeeze.input[1]) if len(squeeze.input) > 1 else _attr(squeeze, "axes")
    if axes is None or list(np.ravel(axes)) != [0]:
        return None
    src = g.producer.get(squeeze.input[0])
    if src is None:
        return None
    if src.op_type == "Split" and _attr(src, "axis", 0) == 0 and len(src.output) == 3:
        return list(src.output).index(squeeze.input[0]), g.source(src.input[0], "Transpose")
    if src.op_type == "Slice" and len(src.input) >= 4:
        start, end, axis = (g.value(i) for i in src.input[1:4])
        step = g.value(src.input[4]) if len(src.input) > 4 else np.ones(1)
        if any(v is None or np.size(v) != 1 for v in (start, end, axis, step)):
            return None
        s, e = int(np.ravel(start)[0]), int(np.ravel(end)[0])
        if int(np.ravel(axis)[0]) == 0 and int(np.ravel(step)[0]) == 1 and e == s + 1 and 0 <= s < 3:
            return s, g.source(src.input[0], "Transpose")
    return None


def _dims(g: _Graph, name: str) -> list[int | None] | None:
    """The target shape a Reshape is given: constant, or a Concat of constants and one-element runtime
    values (None; a dynamic batch or token count)."""
    value = g.value(name)
    if value is not None:
        return [int(v) for v in np.ravel(value)]
    concat = g.source(name, "Concat")
    if concat is None:
        return None
    dims = []
    for part in concat.input:
        value = g.value(part)
        dims += [None] if value is None else [int(v) for v in np.ravel(value)]
    return dims


def _match(g: _Graph, att) -> dict | None:
    """The parts of one timm self-attention block around the ai.onnx ``Attention`` node ``att``, or None."""
    if len(att.input) != 3 or len(att.output) != 1 or any(_attr(att, a) for a in ("is_causal", "softcap")):
        return None
    if _attr(att, "scale") is not None:  # the default 1/sqrt(d) only
        return None
    found = [_qkv_index(g, g.producer.get(i)) for i in att.input]
    if any(f is None for f in found) or [f[0] for f in found] != [0, 1, 2]:
        return None
    transposes = {id(f[1]) for f in found}
    perm = found[0][1]
    if len(transposes) != 1 or perm is None or list(_attr(perm, "perm", [])) != [2, 0, 3, 1, 4]:
        return None
    reshape = g.source(perm.input[0], "Reshape")
    shape = None if reshape is None else _dims(g, reshape.input[1])
    if shape is None or len(shape) != 5 or shape[2] != 3 or None in shape[3:]:
        return None
    heads, head_dim = shape[3], shape[4]
    add = g.source(reshape.input[0], "Add")
    if add is None:
        return None
    matmul, bias = None, None
    for a, b in (add.input, reversed(add.input)):
        if g.source(a, "MatMul") is not None and g.value(b) is not None:
            matmul, bias = g.source(a, "MatMul"), g.value(b)
    if matmul is None:
        return None
    weight = g.value(matmul.input[1])
    width = heads * head_dim
    if weight is None or weight.shape != (width, 3 * width) or bias.shape != (3 * width,):
        return None
    back = g.only_consumer(att.output[0], "Transpose")
    if back is None or list(_attr(back, "perm", [])) != [0, 2, 1, 3]:
        return None
    merge = g.only_consumer(back.output[0], "Reshape")
    merged = None if merge is None else _dims(g, merge.input[1])
    if merged is None or len(merged) != 3 or merged[2] not in (width, -1):
        return None
    return {
        "x": matmul.input[0],
        "weight": weight.astype(np.float32),
        "bias": bias.astype(np.float32),
        "heads": heads,
        "out": merge.output[0],
        "name": att.name or merge.output[0],
    }


def fuse_attention(model, *, strict: bool = False) -> int:
    """Rewrite, in place, every timm self-attention block of the ONNX ``model`` (a ``ModelProto`` at
    opset >= 23) as one ``com.microsoft.Attention`` node (see the module docstring); returns how many.
    The nodes the blocks leave unused are removed. ``strict``: a graph with no such block raises
    ``ValueError`` (its message one line) instead of returning 0."""
    from onnx import helper

    g = _Graph(model)
    blocks = [
        m
        for n in model.graph.node
        if n.op_type == "Attention" and n.domain in ("", "ai.onnx")
        if (m := _match(g, n)) is not None
    ]
    if not blocks:
        if strict:
            attention = sum(n.op_type == "Attention" for n in model.graph.node)
            raise ValueError(
                f"no self-attention block of timm's fused-qkv form in the graph ({attention} ONNX Attention "
                "nodes; the default opset 23 export writes them)"
            )
        return 0
    graph = model.graph
    for i, m in enumerate(blocks):
        w, b = f"fused_attention_{i}.weight", f"fused_attention_{i}.bias"
        graph.initializer.extend(
            [g.numpy_helper.from_array(m["weight"], w), g.numpy_helper.from_array(m["bias"], b)]
        )
        graph.node.append(
            helper.make_node(
                "Attention",
                [m["x"], w, b],
                [m["out"]],
                name=f"{m['name']}_fused",
                domain=ATTENTION_DOMAIN,
                num_heads=m["heads"],
            )
        )
    # the replaced nodes: whatever no longer leads to an output
    _prune(model)
    _topological_sort(model)
    if not any(o.domain == ATTENTION_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ATTENTION_DOMAIN, 1))
    return len(blocks)


def _prune(model) -> None:
    """Remove the nodes and initializers that no graph output depends on (dead after a rewrite). The
    outputs of a replaced block are produced twice until then: the fused node, appended last, wins."""
    graph = model.graph
    producer = {}
    for n in graph.node:
        for o in n.output:
            producer[o] = n  # the last producer of a name: the fused node for a block's output
    needed, stack = set(), [o.name for o in graph.output]
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(i for i in node.input if i)
    keep = [n for n in graph.node if id(n) in needed]
    used = {i for n in keep for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _topological_sort(model) -> None:
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, order = list(graph.node), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise ValueError("the rewritten attention graph has a cycle")
        for n in done:
            order.append(n)
            ready.update(n.output)
        pending = rest
    del graph.node[:]
    graph.node.extend(order)
