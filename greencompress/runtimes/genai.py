"""ONNX Runtime GenAI: a causal LM built by its model builder, generated with its KV cache, int4/int8 as MatMulNBits.

We build with ONNX Runtime GenAI's own model builder (`onnxruntime_genai.models.builder`), a maintained exporter
that writes the decoder with its KV cache as inputs and outputs, GroupQueryAttention and MatMulNBits, and the
genai_config.json its runtime reads; a hand-written decoder-with-cache export would have to track every
transformers release. FP32 is built from the model folder itself. A weight-only model is handed over as a
quantized checkpoint the builder reads (Olive's layout: unsigned codes packed two to a byte along the inputs, a
scale and a packed zero point per group; compress/weight_only.py's grids), so the file holds exactly the codes
greencompress chose, data-aware or not, rather than the builder's own rounding. The embedding table stays FP32, and
the output head too unless `weight_only` rounded it (`head: int8`, stored as its own 8-bit MatMulNBits); neither is
left to the builder's own rounding.

`accuracy_level` is MatMulNBits' choice of arithmetic: 4 (the builder's CPU default) quantizes each activation
row to int8 on the fly and runs int8 dot products, faster and not exact; 1 computes in FP32 and gives the logits
of the PyTorch model with the same weights. The perplexity a run reports is measured on the built file itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from greencompress.core.errors import GreencompressError
from greencompress.runtimes.base import RUNTIMES, RuntimeSpec

INSTALL_HINT = "pip install onnxruntime-genai"
# Kept as the checkpoint has them (the builder would round them itself): the embedding, and the head unless rounded.
HEAD, EMBEDDING = "/lm_head/MatMul", "/model/embed_tokens/Gather"
# The graph the GenAI loop runs: model.onnx with the head on the last position only (same weights file).
GENERATING = "model.generate.onnx"


class NotBuildable(GreencompressError):
    """The model builder does not build this architecture: the runtime is left out of the run, and says why."""


def build(
    source: Path,
    output: Path,
    threads: int,
    quantized: QuantizedCheckpoint | None = None,
    accuracy_level: int = 4,
) -> dict:
    """Build `output` (a GenAI folder: model.onnx, its weights, genai_config.json, tokenizer) from the model folder
    `source`, FP32, or with the weight-only codes of `quantized`. Returns what was built; GreencompressError with
    the builder's last lines when it fails."""
    reason = RUNTIME.unavailable()
    if reason:
        raise GreencompressError(reason)
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    checkpoint = None
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-o", str(scratch), "-e", "cpu"]
    command += ["-c", str(output.with_name(f".{output.name}.cache"))]
    if quantized is None:
        command += ["-i", str(source), "-p", "fp32"]
    else:
        checkpoint = output.with_name(f".{output.name}.checkpoint")
        quantized.write(source, checkpoint)
        precision = f"int{quantized.bits}"  # the other layers' bits are the checkpoint's overrides
        excluded = EMBEDDING if quantized.head is not None else f"{HEAD},{EMBEDDING}"
        command += ["-i", str(checkpoint), "-p", precision, "--extra_options", f"nodes_to_exclude={excluded}"]
        command += [f"accuracy_level={accuracy_level}"]
    log_file = output.with_name(f"{output.name}.build.log")
    with open(log_file, "w", encoding="utf-8") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if checkpoint is not None:
        shutil.rmtree(checkpoint, ignore_errors=True)
    shutil.rmtree(output.with_name(f".{output.name}.cache"), ignore_errors=True)
    if finished.returncode != 0 or not (scratch / "model.onnx").is_file():
        shutil.rmtree(scratch, ignore_errors=True)
        text = log_file.read_text(encoding="utf-8", errors="replace")
        if "is not currently supported" in text:
            architecture = json.loads((source / "config.json").read_text(encoding="utf-8")).get("architectures")
            raise NotBuildable(f"its model builder does not build {architecture} (log: {log_file})")
        tail = text.strip().splitlines()[-3:]
        raise GreencompressError(f"ONNX Runtime GenAI's model builder failed on {source}: {' | '.join(tail)}")
    if quantized is not None and quantized.float_zero:
        _write_float_zero_points(scratch, quantized)
    _write_generating_graph(scratch)
    _set_threads(scratch / "genai_config.json", threads)
    shutil.rmtree(output, ignore_errors=True)
    scratch.rename(output)
    return {
        "builder": "onnxruntime_genai.models.builder",
        "precision": "fp32" if quantized is None else quantized.precision,
        "accuracy_level": None if quantized is None else accuracy_level,
        "head": f"last position only in {GENERATING}; every position in model.onnx (perplexity)",
        "bytes": sum(f.stat().st_size for f in output.iterdir() if f.is_file()),
    }


def _write_float_zero_points(folder: Path, quantized: QuantizedCheckpoint) -> None:
    """Replace every MatMulNBits' packed integer zero points (the checkpoint's placeholders) with the grid's own
    real-valued ones, which MatMulNBits also reads: the builder's names map back to the model's layers (its fused
    q/k/v holds their rows in that order), and each node's scales are checked against the grid's first."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"))
    by_name = {tensor.name: tensor for tensor in model.graph.initializer}
    replaced = 0
    for index, tensor in enumerate(model.graph.initializer):
        if not tensor.name.endswith(".MatMulNBits.qzeros"):
            continue
        layer = tensor.name.removesuffix(".MatMulNBits.qzeros").replace(".attn.", ".self_attn.")
        if layer == "lm_head":
            continue  # the head's own grid: symmetric, integer
        parts = (
            [layer.replace("qkv_proj", name) for name in ("q_proj", "k_proj", "v_proj")]
            if "qkv_proj" in layer
            else [layer]
        )
        missing = [name for name in parts if name not in quantized.grids]
        if missing:
            raise GreencompressError(
                f"{folder / 'model.onnx'}: {tensor.name} maps to no quantized layer ({missing[0]})"
            )
        if not quantized.grids[parts[0]].grid.float_zero:
            continue  # a layer on an integer grid (int8_layers): its zero points are the built ones
        scales = torch.cat([quantized.grids[name].scale for name in parts]).reshape(-1).numpy()
        built = numpy_helper.to_array(by_name[tensor.name.removesuffix("qzeros") + "scales"])
        if built.shape != scales.shape or not np.allclose(built, scales, rtol=1e-5):
            raise GreencompressError(f"{folder / 'model.onnx'}: {tensor.name}: the built scales are not the grid's")
        zeros = torch.cat([quantized.grids[name].zero for name in parts]).reshape(-1).numpy().astype(np.float32)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(zeros, tensor.name))
        replaced += 1
    if replaced == 0:
        raise GreencompressError(f"{folder / 'model.onnx'}: no MatMulNBits zero points to replace")
    (folder / "model.onnx").unlink()
    (folder / "model.onnx.data").unlink()
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data")


def _write_generating_graph(folder: Path) -> None:
    """Write GENERATING beside model.onnx, its output head fed the last position's hidden state alone, and point
    genai_config.json at it. Generation reads the last position's logits only; the builder's graph multiplies every
    prompt position by the vocabulary-wide head (a sixth of SmolLM2's time to first token), and the GenAI loop
    takes logits of one position as they come. model.onnx keeps every position, for perplexity; both graphs read
    the same weights file."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    producers = [node for node in model.graph.node if "logits" in node.output]
    outputs = [output for output in model.graph.output if output.name == "logits"]
    if len(producers) != 1 or len(outputs) != 1:
        raise GreencompressError(f"{folder / 'model.onnx'}: no single node gives its logits")
    head = producers[0]
    bounds = {"last_position.starts": -1, "last_position.ends": np.iinfo(np.int64).max, "last_position.axes": 1}
    model.graph.initializer.extend(helper.make_tensor(name, TensorProto.INT64, [1], [v]) for name, v in bounds.items())
    last = helper.make_node("Slice", [head.input[0], *bounds], ["last_position.hidden"], name="/lm_head/last_position")
    head.input[0] = "last_position.hidden"
    model.graph.node.insert(list(model.graph.node).index(head), last)
    positions = outputs[0].type.tensor_type.shape.dim[1]
    positions.ClearField("dim_param")
    positions.dim_value = 1
    onnx.save_model(model, str(folder / GENERATING))  # its initializers still name model.onnx.data
    config_file = folder / "genai_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["model"]["decoder"]["filename"] = GENERATING
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _set_threads(config_file: Path, threads: int) -> None:
    """The runtime's intra-op threads, as the rest of the run uses (genai_config.json's session options)."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    options = config["model"]["decoder"].setdefault("session_options", {})
    options.update(intra_op_num_threads=threads, inter_op_num_threads=1)
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


class QuantizedCheckpoint:
    """A causal LM's weights with every quantized linear layer stored as its integer codes (Olive's layout, which the
    GenAI builder reads), the rest as they are. `grids`: each quantized layer's LayerGrid (the most common grid is
    the checkpoint's, the others written as per-layer overrides); `head`: the output head's, when it was rounded."""

    def __init__(self, module, grids: dict, head=None):
        self.module, self.grids, self.head = module, grids, head
        if not grids:
            raise GreencompressError("a quantized checkpoint needs at least one quantized layer")
        kinds = [layer.grid for layer in grids.values()]
        self.grid = max(set(kinds), key=kinds.count)  # the builder's precision; the others are overrides
        ungrouped = next((grid for grid in kinds if grid.group_size is None), None)
        if ungrouped is not None:
            raise GreencompressError(
                f"{ungrouped.name}: ONNX Runtime's MatMulNBits stores weights in groups (block_size 16 to 256, a "
                "power of 2): give weight_only a group_size"
            )

    @property
    def bits(self) -> int:
        return self.grid.bits

    @property
    def precision(self) -> str:
        """`int4`, or `int4 + int8 (120 of 210 layers)` when some layers have more bits (named by the fewest, as
        llama.cpp names Q4_K_M a 4-bit format)."""
        bits = [layer.grid.bits for layer in self.grids.values()]
        more = "".join(f" + int{b} ({bits.count(b)} of {len(bits)} layers)" for b in sorted(set(bits))[1:])
        return f"int{min(bits)}{more}"

    @property
    def float_zero(self) -> bool:
        return any(layer.grid.float_zero for layer in self.grids.values())

    def write(self, source: Path, folder: Path) -> None:
        from safetensors.torch import save_file

        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        layers = dict(self.grids)
        if self.head is not None:
            layers["lm_head"] = self.head
        tensors = {}
        for name, tensor in self.module.state_dict().items():
            layer = name.removesuffix(".weight")
            if layer in layers and name.endswith(".weight"):
                tensors.update(_quantized_tensors(layer, tensor, layers[layer]))
            elif not name.startswith("lm_head.") or not self.module.config.tie_word_embeddings:
                tensors[name] = tensor.detach().contiguous()
        save_file(tensors, str(folder / "model.safetensors"))
        for extra in source.iterdir():
            if extra.suffix in (".json", ".jinja", ".txt", ".model") and extra.name not in ("config.json", "gguf.json"):
                shutil.copy(extra, folder / extra.name)
        # The model's own config, not the source folder's: a structural stage may have changed its layer count.
        config = json.loads(self.module.config.to_json_string(use_diff=False))
        config["quantization_config"] = {
            "quant_method": "olive",
            "bits": self.grid.bits,
            "group_size": self.grid.group_size,
            "symmetric": self.grid.symmetric,
        }
        # Layers on another grid than the checkpoint's, the rounded head among them (the loader reads overrides per
        # layer); the zero points are stored for every layer, so symmetry needs no override.
        overrides = {
            name: {"bits": layer.grid.bits, "group_size": layer.grid.group_size}
            for name, layer in layers.items()
            if (layer.grid.bits, layer.grid.group_size) != (self.grid.bits, self.grid.group_size) or name == "lm_head"
        }
        if overrides:
            config["quantization_config"]["overrides"] = overrides
        if self.head is not None:
            config["tie_word_embeddings"] = False
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _quantized_tensors(layer: str, weight, layer_grid) -> dict:
    """One layer as Olive's tensors: unsigned codes packed along the inputs, scales, packed zero points."""
    grid = layer_grid.grid
    offset = 2 ** (grid.bits - 1) if grid.symmetric else 0  # stored unsigned: symmetric codes around 8 or 128
    codes = layer_grid.codes(weight) + offset
    # A float zero point is written later into the built file (_write_float_zero_points); the checkpoint holds its
    # nearest code, which the builder requires.
    zero = layer_grid.zero.round().clamp(0, 2**grid.bits - 1) if grid.float_zero else layer_grid.zero
    return {
        f"{layer}.qweight": _pack(codes, grid.bits),
        f"{layer}.scales": layer_grid.scale.float().contiguous(),
        f"{layer}.qzeros": _pack((zero + offset).to(codes.dtype), grid.bits),
    }


def _pack(codes, bits: int):
    """Unsigned codes [rows, n] packed into bytes along each row, the first value in the lowest bits (MatMulNBits')."""
    import torch

    per_byte = 8 // bits
    rows, count = codes.shape
    padded = torch.nn.functional.pad(codes.to(torch.int32), (0, (-count) % per_byte))
    grouped = padded.reshape(rows, -1, per_byte)
    packed = torch.zeros(grouped.shape[:2], dtype=torch.int32)
    for position in range(per_byte):
        packed |= grouped[..., position] << (bits * position)
    return packed.to(torch.uint8).contiguous()


class GenAIGenerator:
    """measure/generation.Generator over a GenAI folder: greedy, the runtime's own KV cache."""

    def __init__(self, folder: Path, max_new_tokens: int):
        import onnxruntime_genai as og

        self.og, self.model, self.max_new_tokens = og, og.Model(str(folder)), max_new_tokens

    def prefill(self, ids: np.ndarray):
        params = self.og.GeneratorParams(self.model)
        # Every query generates its full count: an end-of-text token does not stop it (min_length = max_length).
        # A fixed seed, which greedy search never reads: unset, each generator seeds its sampler from
        # std::random_device, 14.6 ms a query on an AMD EPYC VM (slow RDRAND), 0.2 ms seeded (docs/BENCHMARKS.md).
        length = ids.shape[1] + self.max_new_tokens
        params.set_search_options(
            max_length=length, min_length=length, do_sample=False, batch_size=len(ids), random_seed=0
        )
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(ids)  # the prompts' forward pass, [batch, tokens] of equal length
        generator.generate_next_token()  # the first new token of each, from the prompts' last logits
        return generator, ids.shape

    def step(self, state):
        state[0].generate_next_token()  # one decode step: the last tokens' forward pass, then their successors
        return state

    def tokens(self, state) -> np.ndarray:
        generator, (batch, prompt) = state
        return np.stack([np.asarray(generator.get_sequence(row))[prompt:] for row in range(batch)])


def onnx_logits(folder: Path, threads: int):
    """measure/perplexity's `logits_of` for the GenAI folder's model.onnx (every position's logits; the GenAI loop
    runs the same weights through GENERATING): a whole window at once, empty KV cache."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    decoder = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
    empty_cache = np.zeros((1, decoder["num_key_value_heads"], 0, decoder["head_size"]), dtype=np.float32)

    def run(tokens: np.ndarray) -> np.ndarray:
        length = tokens.shape[1]
        feed = {}
        for spec in inputs:
            if spec.name == "input_ids":
                feed[spec.name] = tokens.astype(np.int64)
            elif spec.name == "attention_mask":
                feed[spec.name] = np.ones_like(tokens, dtype=np.int64)
            elif spec.name == "position_ids":
                feed[spec.name] = np.arange(length, dtype=np.int64)[None]
            elif spec.name.startswith("past_key_values"):
                feed[spec.name] = empty_cache
            else:
                raise GreencompressError(f"{folder / 'model.onnx'}: unexpected input {spec.name!r}")
        return session.run(["logits"], feed)[0]

    return run


def _not_a_batch_runner(source, settings):
    raise GreencompressError("onnxruntime-genai generates text: only a text-generation run measures it")


# Whether it is installed is the registered spec's to say (RuntimeSpec.unavailable), as for every runtime.
RUNTIME = RuntimeSpec(
    "onnxruntime-genai",
    "generate",  # a causal LM's prompts and tokens (pipeline/generate.py), not batches of a file
    _not_a_batch_runner,
    "ORT GenAI",
    "onnxruntime_genai",
    INSTALL_HINT,
    in_auto=False,
)
RUNTIMES.register(RUNTIME)
