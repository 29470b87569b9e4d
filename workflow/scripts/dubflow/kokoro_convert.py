"""Rewrite the int8 Kokoro graph so onnxruntime runs its convolutions fast on a CPU.

The Kokoro model that ships here is upstream's dynamic-int8 export: every Conv became
DynamicQuantizeLinear -> ConvInteger [-> Add quantized bias] -> Cast -> Mul. Profiled on
one thread, ConvInteger is ~63 % of the time: onnxruntime runs it as im2col plus a u8
GEMM, with a pass over the activations to quantize them first. This rewrite

1. replaces each such chain by a float Conv over the *same* int8 weights, dequantized
   once here ((W_q - zero_point) * scale) with the float bias: the voice keeps the
   weights it was shipped with and loses only the activation rounding;
2. runs every 1-D Conv as a 2-D Conv of height 1 (Unsqueeze -> Conv -> Squeeze), which
   onnxruntime's NCHWc layout pass turns into its blocked AVX2/AVX-512 direct kernels
   (it only takes 4-D convolutions).

Measured on Portuguese, one thread: 0.68 CPU s per second of speech for the int8 graph,
0.57 for this one on a quiet machine (bench/kokoro_speed.py, 3 runs); 0.80 against 0.645
interleaved in one process while other jobs loaded the 2 cores. Whisper base heard both
alike (12 sentences, 2 voices: +-1.5 WER points, the same median F0).

The output is a pure function of the input graph (no randomness, fixed node order), so
setup can check it against a sha256 like the joined model. Needs the ``onnx`` package,
imported here only, at setup time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dubflow.errors import ModelError

AXIS_NAME = "dubflow_axis2"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ModelError("the Python package onnx is not installed, so the Kokoro model cannot "
                         "be prepared (stage setup); run `make setup` or "
                         "`pip install onnx==1.23.2`") from None
    return onnx


def convert(source: Path, dest: Path) -> None:
    """Write the fast graph of the int8 model ``source`` to ``dest``."""
    onnx = _onnx()
    model = onnx.load(str(source))
    float_convs(model.graph)
    convs_as_2d(model.graph)
    _drop_dead(model.graph)
    onnx.save(model, str(dest))


def float_convs(graph) -> None:
    """Replace each ConvInteger chain by a float Conv over its dequantized weights."""
    from onnx import helper, numpy_helper

    init = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replaced, dropped, added = {}, set(), []
    for node in graph.node:
        if node.op_type != "ConvInteger":
            continue
        chain, bias = _chain(node, producer, consumers, init)
        weight_name = node.input[1]
        base = weight_name.removesuffix("_quantized")
        w_q = numpy_helper.to_array(init[weight_name]).astype(np.float32)
        zero = numpy_helper.to_array(init[node.input[3]]).astype(np.float32)
        scale = numpy_helper.to_array(init[base + "_scale"]).astype(np.float32)
        weights = ((w_q - zero) * scale).astype(np.float32)
        float_name = base + "_float"
        added.append(numpy_helper.from_array(weights, float_name))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        source = producer[node.input[0]].input[0]  # DynamicQuantizeLinear's float input
        replaced[id(node)] = helper.make_node(
            "Conv", [source, float_name] + ([bias] if bias else []), [chain[-1].output[0]],
            name=f"{node.name}_float", **attrs)
        dropped.update(id(n) for n in chain[1:])
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)


def _chain(node, producer, consumers, init) -> tuple[list, str | None]:
    """The nodes ConvInteger -> [Add] -> Cast -> Mul and the float bias initializer."""
    if producer.get(node.input[0]) is None or producer[node.input[0]].op_type != "DynamicQuantizeLinear":
        raise ModelError(f"the Kokoro graph's {node.name} is not fed by DynamicQuantizeLinear "
                         f"(stage setup); this is not the int8 model dubflow was built for")
    chain, bias = [node], None
    following = consumers.get(node.output[0], [])
    if len(following) == 1 and following[0].op_type == "Add":
        add = following[0]
        # bias_q = Reshape(Cast(Floor(Div(bias, x_scale * w_scale))))
        div = producer[add.input[1]]
        for _ in ("Reshape", "Cast", "Floor"):
            div = producer.get(div.input[0], div)
        if div.op_type != "Div" or div.input[0] not in init:
            raise ModelError(f"the Kokoro graph's {node.name} has a bias in an unknown form "
                             f"(stage setup); this is not the int8 model dubflow was built for")
        bias = div.input[0]
        chain.append(add)
        following = consumers.get(add.output[0], [])
    ops = [n.op_type for n in following]
    if ops != ["Cast"] or [n.op_type for n in consumers.get(following[0].output[0], [])] != ["Mul"]:
        raise ModelError(f"the Kokoro graph's {node.name} is not followed by Cast and Mul "
                         f"(stage setup); this is not the int8 model dubflow was built for")
    chain += [following[0], consumers[following[0].output[0]][0]]
    return chain, bias


def convs_as_2d(graph) -> None:
    """Run every 1-D Conv with constant weights as a 2-D Conv of height 1."""
    from onnx import helper, numpy_helper

    init = {t.name: t for t in graph.initializer}
    graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), AXIS_NAME))
    nodes, reshaped = [], set()
    for node in graph.node:
        weight = init.get(node.input[1]) if node.op_type == "Conv" else None
        if weight is None or (len(weight.dims) != 3 and weight.name not in reshaped):
            nodes.append(node)
            continue
        if weight.name not in reshaped:  # a weight two convs share is reshaped once
            reshaped.add(weight.name)
            weight.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(weight)[:, :, None, :], weight.name))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        for name in ("kernel_shape", "strides", "dilations"):
            if name in attrs:
                attrs[name] = [1, *attrs[name]]
        if "pads" in attrs:
            attrs["pads"] = [0, attrs["pads"][0], 0, attrs["pads"][1]]
        wide, out = f"{node.output[0]}_4d_in", f"{node.output[0]}_4d_out"
        nodes += [helper.make_node("Unsqueeze", [node.input[0], AXIS_NAME], [wide],
                                   name=f"{node.name}_unsqueeze"),
                  helper.make_node("Conv", [wide, *node.input[1:]], [out],
                                   name=f"{node.name}_2d", **attrs),
                  helper.make_node("Squeeze", [out, AXIS_NAME], [node.output[0]],
                                   name=f"{node.name}_squeeze")]
    del graph.node[:]
    graph.node.extend(nodes)


def _drop_dead(graph) -> None:
    """Remove nodes and initializers no graph output depends on (the quantizers)."""
    needed = {out.name for out in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


#: Per-token durations in frames at speed 1, before the graph divides them by ``speed``
#: and rounds them: everything the audio's length depends on.
DURATIONS_OUTPUT = "/encoder/predictor/ReduceSum_output_0"


def durations_graph(source: Path, dest: Path) -> None:
    """Write the part of the served graph ``source`` that predicts token durations.

    It is the text encoder and the duration predictor (1,130 of 3,043 nodes, 15 MB), all
    that kokoro_voice.KokoroTiming runs to know a line's length before it is made.
    """
    onnx = _onnx()
    from onnx.utils import Extractor

    sub = Extractor(onnx.load(str(source))).extract_model(["tokens", "style"],
                                                          [DURATIONS_OUTPUT])
    onnx.save(sub, str(dest))
