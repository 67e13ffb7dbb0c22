"""OpenVINO generating text: the decoder ONNX Runtime GenAI's builder wrote, read by OpenVINO with its KV cache kept
as the model's state.

OpenVINO's maintained exporter for causal LMs (optimum-intel) requires an older transformers than greencompress's,
and a hand-written decoder-with-cache export would have to track every transformers release. The builder's file
already is a decoder with its KV cache as inputs and outputs, and OpenVINO's ONNX reader takes it whole
(GroupQueryAttention and MatMulNBits included). OpenVINO's stateful transformation then turns each past/present pair
into a state its infer request keeps between calls, as optimum-intel's stateful export does, so no cache crosses
into Python. OpenVINO thus runs the same bytes, the same int4/int8 codes, as ONNX Runtime GenAI: what differs
between their figures is the runtime alone.

Each GroupQueryAttention node is rewritten as the attention the CPU plugin fuses with its KV cache
(runtimes/openvino_attention.py), so a decode step reads its cache in place rather than copying it; batches of
prompts of one length then run together too. A node it cannot rewrite is left to OpenVINO's own reading, which
copies the cache each step and runs one sequence at a time (such a model generates batch 1 only, and says so).
Zero points that ONNX Runtime padded to whole bytes are sliced once into the u4 codes the plugin's compressed
products read fastest (runtimes/openvino_weights.py).

Settings, stated in every build record: FP32 arithmetic and an FP32 KV cache (on a CPU with bf16 units OpenVINO
would otherwise compute an FP32 model in bf16, and it rounds a cache to 8 bits by default); compressed weights'
activations quantized to int8 on the fly in groups as long as the weights' (MatMulNBits' accuracy level 4 does the
same; OpenVINO's default of 32 cut each group of 64 in two and decoded SmolLM2's mixed file at 1.09x the time), so
perplexity is measured on OpenVINO itself.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greencompress.core.errors import GreencompressError
from greencompress.runtimes.openvino_attention import BEAM_INPUT, fuse_attention
from greencompress.runtimes.openvino_weights import slice_zero_points

RUNTIME_NAME = "openvino"


@dataclass(frozen=True)
class CompiledDecoder:
    compiled: object  # openvino.CompiledModel
    fused: int  # attention nodes rewritten for the plugin's cached attention
    unfused: int  # those left to OpenVINO's own reading (batch 1 only)
    last_position: bool  # the output head computes the last position's logits only
    zero_points_sliced: int = 0  # compressed layers whose padded zero points were sliced into u4 codes


def compile_decoder(folder: Path, threads: int, last_position: bool = True) -> CompiledDecoder:
    """The GenAI folder's model.onnx compiled by OpenVINO for the CPU, its attention rewritten where it can be and
    its KV cache made state. `last_position`: the output head reads the last position only, which is all a
    generator uses (a prefill of 128 tokens otherwise multiplies 128 rows by the vocabulary-wide head, as optimum-
    intel's exports also avoid); perplexity needs every position's logits."""
    import openvino
    import openvino.opset13 as ops
    from openvino._offline_transformations import apply_make_stateful_transformation

    decoder = _decoder_config(folder)
    core = openvino.Core()
    model = core.read_model(str(folder / "model.onnx"))
    names = {port.get_any_name() for port in model.inputs}
    pairs = {}
    for layer in range(decoder["num_hidden_layers"]):
        for part in ("key", "value"):
            past, present = f"past_key_values.{layer}.{part}", f"present.{layer}.{part}"
            if past not in names:
                raise GreencompressError(f"{folder / 'model.onnx'}: no input {past!r}: not a decoder with a KV cache")
            pairs[past] = present
    fused = fuse_attention(model)
    sliced = slice_zero_points(model)
    unfused = sum(op.get_type_name() == "GroupQueryAttention" for op in model.get_ops())
    if last_position:
        _head_reads_last_position(model, folder)
    apply_make_stateful_transformation(model, pairs)
    # A state starts empty: [batch, KV heads, 0 positions, head size], the batch read from the prompt ids (the
    # transformation's default would leave the heads and head size 0 where the file leaves them unnamed).
    ids = next(port for port in model.inputs if port.get_any_name() == "input_ids")
    batch = ops.gather(ops.shape_of(ids, "i64"), ops.constant(np.array([0], np.int64)), ops.constant(np.int64(0)))
    heads_and_size = ops.constant(np.array([decoder["num_key_value_heads"], 0, decoder["head_size"]], np.int64))
    empty = ops.broadcast(ops.constant(np.float32(0)), ops.concat([batch, heads_and_size], 0))
    for op in model.get_ops():
        if op.get_type_name() == "ReadValue":
            op.set_arguments([empty])
    model.validate_nodes_and_infer_types()
    config = {
        **_activation_groups(folder / "model.onnx"),
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "KV_CACHE_PRECISION": "f32",  # the plugin's default rounds the cache to 8 bits: not what "fp32" says
    }
    return CompiledDecoder(core.compile_model(model, "CPU", config), fused, unfused, last_position, sliced)


def _head_reads_last_position(model, folder: Path) -> None:
    """Feed the output head (the MatMul giving `logits`) the last position's hidden state alone."""
    import openvino.opset13 as ops

    results = [result for result in model.get_results() if "logits" in result.input_value(0).get_names()]
    head = results[0].input_value(0).get_node() if len(results) == 1 else None
    if (
        head is None
        or head.get_type_name() != "MatMul"
        or head.input_value(0).get_partial_shape().rank.get_length() != 3
    ):
        raise GreencompressError(f"{folder / 'model.onnx'}: its logits do not come from a MatMul of the hidden states")
    hidden = head.input_value(0)

    def vector(value):
        return ops.constant(np.array([value], np.int64))

    last = ops.slice(hidden, vector(-1), vector(np.iinfo(np.int64).max), vector(1), vector(1))
    head.input(0).replace_source_output(last.output(0))


def _activation_groups(path: Path) -> dict:
    """The plugin setting that quantizes a compressed product's activations in groups as long as its weights'
    (the largest length that divides every MatMulNBits block); none for a file without compressed weights."""
    import math

    import onnx

    blocks = {
        attribute.i
        for node in onnx.load(str(path), load_external_data=False).graph.node
        if node.op_type == "MatMulNBits"
        for attribute in node.attribute
        if attribute.name == "block_size"
    }
    return {"DYNAMIC_QUANTIZATION_GROUP_SIZE": math.gcd(*blocks)} if blocks else {}


def _decoder_config(folder: Path) -> dict:
    return json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]


def settings(decoder: CompiledDecoder) -> dict:
    """What the build record says of how OpenVINO computes (read back from the compiled model)."""
    compiled = decoder.compiled
    described = {
        "reads": "the ONNX Runtime GenAI builder's model.onnx, KV cache made state",
        "attention": f"{decoder.fused} layers on the plugin's cached attention, {decoder.unfused} on its own reading",
        "head": "last position only" if decoder.last_position else "every position",
        "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
        "kv_cache_precision": compiled.get_property("KV_CACHE_PRECISION").to_string(),
        "dynamic_quantization_group_size": int(compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")),
    }
    if decoder.zero_points_sliced:
        described["zero_points"] = f"sliced into u4 codes in {decoder.zero_points_sliced} layers"
    return described


class _Lease:
    """An infer request lent to one query: every state of that query holds the lease, and when the last of them is
    gone (the query is finished with) the request returns to the generator's free list for the next prefill."""

    def __init__(self, request, index: int, free: list[int]):
        self.request, self.index = request, index
        weakref.finalize(self, free.append, index)


@dataclass(frozen=True)
class _Query:
    lease: _Lease  # the infer request holding its cache
    cached: int  # positions in the cache
    generated: list


class OpenVINOGenerator:
    """measure/generation.Generator over a GenAI folder on OpenVINO: greedy, the KV cache held by infer requests.
    Each query's cache lives in an infer request lent to it for as long as one of its states is held; a prefill
    reuses a request no state holds any more (reset first) and makes a new one only when every request is held, so
    a benchmark's rounds reuse the requests and the memory of the rounds before rather than allocating in the
    timed windows."""

    max_batch_reason = "OpenVINO's own reading of GroupQueryAttention runs one sequence"

    def __init__(self, folder: Path, threads: int):
        self.decoder = compile_decoder(folder, threads)
        # OpenVINO 2026.4's own reading of GroupQueryAttention reshapes to one sequence (a batch of 3 fails in the
        # CPU plugin): such a model leaves larger batches out of a run, saying why, rather than decode row by row.
        self.max_batch_size = 1 if self.decoder.unfused else None
        self.beams = self.decoder.fused > 0  # the rewritten attention reads `beam_idx`
        self.requests: list = []  # every request made, by index
        self.free: list[int] = []  # indices of requests no held state uses
        self.folder, self.threads = folder, threads

    def _feed(self, ids: np.ndarray, cached: int) -> dict:
        feed = {"input_ids": ids, "attention_mask": np.ones((len(ids), cached + ids.shape[1]), dtype=np.int64)}
        if self.beams:
            feed[BEAM_INPUT] = np.arange(len(ids), dtype=np.int32)  # each row continues its own sequence
        return feed

    def _lease(self) -> _Lease:
        if self.free:
            index = self.free.pop()
        else:
            index = len(self.requests)
            self.requests.append(self.decoder.compiled.create_infer_request())
        request = self.requests[index]
        request.reset_state()
        return _Lease(request, index, self.free)

    def prefill(self, ids: np.ndarray) -> _Query:
        if self.max_batch_size is not None and len(ids) > self.max_batch_size:
            raise GreencompressError(f"OpenVINO generator: a batch of {len(ids)}: {self.max_batch_reason}")
        lease = self._lease()
        logits = lease.request.infer(self._feed(ids, 0))["logits"]
        token = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        return _Query(lease, ids.shape[1], [token])

    def step(self, query: _Query) -> _Query:
        token = query.generated[-1]
        logits = query.lease.request.infer(self._feed(token, query.cached))["logits"]
        following = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        return _Query(query.lease, query.cached + 1, [*query.generated, following])

    def tokens(self, query: _Query) -> np.ndarray:
        return np.concatenate(query.generated, axis=1)

    def scorer(self):
        """measure/perplexity's `logits_of`: a whole window from an empty cache, every position's logits (a model of
        its own, compiled for the call's lifetime: the generator's head reads the last position only)."""
        request = compile_decoder(self.folder, self.threads, last_position=False).compiled.create_infer_request()

        def logits_of(tokens: np.ndarray) -> np.ndarray:
            request.reset_state()
            output = request.infer(self._feed(tokens.astype(np.int64), 0))
            return np.array(output["logits"], copy=True)

        return logits_of
