"""A text-generation run on a tiny Llama made here: weight-only codes that ONNX Runtime GenAI runs as they were
chosen, perplexity on each runtime's own file, prefill and decode measured apart, and the report."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from greencompress.compress.weight_only import WeightGrid, WeightOnlyConfig, quantize_weights
from greencompress.measure.generation import TorchGenerator
from greencompress.measure.perplexity import torch_logits
from tests.models.tiny_lm import tiny_llama_folder

GENAI = importlib.util.find_spec("onnxruntime_genai") is not None
needs_genai = pytest.mark.skipif(not GENAI, reason="pip install onnxruntime-genai")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("lm") / "tiny-llama")


def calibration(count: int = 3, length: int = 48) -> list[torch.Tensor]:
    return [torch.from_numpy(np.random.default_rng(seed).integers(1, 380, (1, length))) for seed in range(count)]


@needs_genai
@pytest.mark.parametrize(
    "settings, precision",
    [
        (dict(bits=4, group_size=32, symmetric=False, method="aware+feedback"), "int4"),
        (dict(bits=4, group_size=16, symmetric=True, method="rtn"), "int4"),
        (dict(bits=8, group_size=32, symmetric=True, method="rtn"), "int8"),
        # real-valued zero points, written into the built file
        (dict(bits=4, group_size=32, symmetric=False, zero_point="float", method="rtn"), "int4"),
        (dict(bits=4, group_size=16, symmetric=False, zero_point="float", method="aware+feedback"), "int4"),
        # mixed precision: the fused q/k/v and down_proj as int8 overrides in an int4 checkpoint
        (
            dict(
                bits=4, group_size=32, method="aware+feedback", int8_layers=["q_proj", "k_proj", "v_proj", "down_proj"]
            ),
            "int4 + int8 (8 of 14 layers)",
        ),
        (
            dict(bits=4, group_size=32, zero_point="float", method="rtn", int8_layers=["layers.1.mlp.down_proj"]),
            "int4 + int8 (1 of 14 layers)",
        ),
    ],
)
def test_the_built_file_holds_exactly_the_codes_greencompress_chose(llama, tmp_path, settings, precision):
    """At MatMulNBits' FP32 arithmetic (accuracy_level 1) the built file's logits are the rounded PyTorch model's."""
    from transformers import AutoModelForCausalLM

    from greencompress.runtimes import genai

    model = AutoModelForCausalLM.from_pretrained(llama).eval()
    done = quantize_weights(model, WeightOnlyConfig(**settings), calibration())
    assert len(done["grids"]) == 2 * 7  # q, k, v, o, gate, up, down per layer; the head kept
    built = genai.build(llama, tmp_path / "built", 1, genai.QuantizedCheckpoint(model, done["grids"]), 1)
    assert built["precision"] == precision and built["accuracy_level"] == 1
    ids = np.random.default_rng(5).integers(1, 380, (1, 40))
    served = genai.onnx_logits(tmp_path / "built", 1)(ids)
    expected = torch_logits(model)(ids)
    assert np.abs(served - expected).max() < 1e-3 * np.abs(expected).max()
    unrounded = torch_logits(AutoModelForCausalLM.from_pretrained(llama).eval())(ids)
    assert np.abs(served - unrounded).max() > 1e-3 * np.abs(expected).max()  # the codes did change the model


@needs_genai
def test_a_head_rounded_to_int8_is_untied_from_the_embedding_and_built_as_its_own_matmulnbits(llama, tmp_path):
    import onnx
    from transformers import AutoModelForCausalLM

    from greencompress.runtimes import genai

    model = AutoModelForCausalLM.from_pretrained(llama).eval()
    embedding = model.model.embed_tokens.weight.detach().clone()
    config = WeightOnlyConfig(bits=4, group_size=32, method="rtn", head="int8")
    done = quantize_weights(model, config, calibration())
    assert done["head"].grid == WeightGrid(8, 32, True) and torch.equal(model.model.embed_tokens.weight, embedding)
    assert not torch.equal(model.lm_head.weight, embedding) and not model.config.tie_word_embeddings
    checkpoint = genai.QuantizedCheckpoint(model, done["grids"], done["head"])
    genai.build(llama, tmp_path / "built", 1, checkpoint, accuracy_level=1)
    ids = np.random.default_rng(7).integers(1, 380, (1, 40))
    served, expected = genai.onnx_logits(tmp_path / "built", 1)(ids), torch_logits(model)(ids)
    assert np.abs(served - expected).max() < 1e-3 * np.abs(expected).max()
    graph = onnx.load(str(tmp_path / "built" / "model.onnx"), load_external_data=False).graph
    ops = {node.name: node.op_type for node in graph.node}
    assert ops["/lm_head/MatMulNBits"] == "MatMulNBits" and ops["/model/embed_tokens/Gather"] == "Gather"


@needs_genai
def test_genai_generation_continues_greedily_as_pytorch_does_one_prompt_or_a_batch(llama, tmp_path):
    from transformers import AutoModelForCausalLM

    from greencompress.runtimes import genai

    built = genai.build(llama, tmp_path / "fp32", 1)
    # The loop runs the graph whose head reads the last position; model.onnx keeps every position for perplexity.
    config = json.loads((tmp_path / "fp32" / "genai_config.json").read_text())
    assert config["model"]["decoder"]["filename"] == genai.GENERATING and "last position" in built["head"]
    assert genai.onnx_logits(tmp_path / "fp32", 1)(np.ones((1, 7), dtype=np.int64)).shape[1] == 7
    prompts = np.random.default_rng(2).integers(1, 380, (3, 24))
    generators = [
        TorchGenerator(AutoModelForCausalLM.from_pretrained(llama).eval()),
        genai.GenAIGenerator(tmp_path / "fp32", 12),
    ]

    def continue_(generator, ids):
        state = generator.prefill(ids)
        for _ in range(9):
            state = generator.step(state)
        return generator.tokens(state)

    for generator in generators:
        alone = np.concatenate([continue_(generator, prompts[row : row + 1]) for row in range(3)])
        together = continue_(generator, prompts)  # three different prompts of one length decoded as a batch
        assert alone.shape == together.shape == (3, 10) and np.array_equal(alone, together)
    assert np.array_equal(continue_(generators[0], prompts), continue_(generators[1], prompts))


OPENVINO = importlib.util.find_spec("openvino") is not None


@needs_genai
@pytest.mark.skipif(not OPENVINO, reason="pip install openvino")
def test_openvino_runs_the_builders_file_with_its_cache_as_state_as_onnx_runtime_does(llama, tmp_path, monkeypatch):
    """The same file, FP32 and int4 codes: OpenVINO's logits are ONNX Runtime's (FP32 to float error; int4 to its
    activation rounding), its greedy continuations PyTorch's, one prompt or a batch, queries decoded in turn each on
    its own cache, and an overwritten cache or a batch it cannot run refused rather than decoded."""
    from transformers import AutoModelForCausalLM

    from greencompress.core.errors import GreencompressError
    from greencompress.runtimes import genai, openvino_generate
    from greencompress.runtimes.openvino_generate import OpenVINOGenerator

    model = AutoModelForCausalLM.from_pretrained(llama).eval()
    genai.build(llama, tmp_path / "fp32", 1)
    done = quantize_weights(model, WeightOnlyConfig(bits=4, group_size=16, method="rtn"), calibration())
    genai.build(llama, tmp_path / "int4", 1, genai.QuantizedCheckpoint(model, done["grids"]))
    window = np.random.default_rng(3).integers(1, 380, (1, 64))
    for precision, tolerance in (("fp32", 1e-4), ("int4", 0.05)):
        generator = OpenVINOGenerator(tmp_path / precision, 1)
        if precision == "int4":  # activations rounded to int8 in groups as long as the weights', as ORT does
            assert openvino_generate.settings(generator.decoder)["dynamic_quantization_group_size"] == 16
        served = generator.scorer()(window)
        expected = genai.onnx_logits(tmp_path / precision, 1)(window)
        assert served.shape == expected.shape and np.abs(served - expected).max() < tolerance * np.abs(expected).max()

    generator = OpenVINOGenerator(tmp_path / "fp32", 1)
    assert generator.max_batch_size is None
    described = openvino_generate.settings(generator.decoder)
    # One set of rotary positions and causal mask for both layers, each layer's rotary in the form the plugin fuses.
    runtime_ops = [
        op.get_rt_info()["layerType"].astype(str) for op in generator.decoder.compiled.get_runtime_model().get_ops()
    ]
    assert runtime_ops.count("Range") == 2 and runtime_ops.count("RoPE") == 4
    assert described["attention"].startswith("2 layers on the plugin's cached")
    assert described["head"] == "last position only" and described["kv_cache_precision"] == "f32"
    reference = TorchGenerator(AutoModelForCausalLM.from_pretrained(llama).eval())
    prompts = np.random.default_rng(4).integers(1, 380, (3, 20))

    def continue_(generator, ids):
        state = generator.prefill(ids)
        for _ in range(9):
            state = generator.step(state)
        return generator.tokens(state)

    expected = continue_(reference, prompts)
    alone = np.concatenate([continue_(generator, prompts[row : row + 1]) for row in range(3)])
    assert np.array_equal(alone, expected) and np.array_equal(continue_(generator, prompts), expected)
    # Queries decoded in turn, as a benchmark round does: each keeps its own cache, in a request of its own.
    states = [generator.prefill(prompts[row : row + 1]) for row in range(3)]
    for _ in range(9):
        states = [generator.step(state) for state in reversed(states)][::-1]
    assert np.array_equal(np.concatenate([generator.tokens(state) for state in states]), expected)
    held = len(generator.requests)
    assert held >= 3 and len({state.lease.index for state in states}) == 3
    # Queries finished with give their requests back: the next round reuses them, reset, and allocates none.
    del states
    assert len(generator.free) == held
    again = [generator.prefill(prompts[row : row + 1]) for row in range(3)]
    for _ in range(9):
        again = [generator.step(state) for state in again]
    assert len(generator.requests) == held and len(generator.free) == held - 3
    assert np.array_equal(np.concatenate([generator.tokens(state) for state in again]), expected)

    # OpenVINO's own reading of the attention (what a node the rewrite does not reproduce gets): the same tokens,
    # one sequence at a time.
    monkeypatch.setattr(openvino_generate, "fuse_attention", lambda model: 0)
    unfused = OpenVINOGenerator(tmp_path / "fp32", 1)
    assert unfused.max_batch_size == 1 and unfused.decoder.unfused == 2
    assert np.array_equal(np.concatenate([continue_(unfused, prompts[row : row + 1]) for row in range(3)]), expected)
    with pytest.raises(GreencompressError, match="a batch of 3"):
        unfused.prefill(prompts)


@pytest.mark.skipif(not OPENVINO, reason="pip install openvino")
def test_zero_points_padded_to_whole_bytes_reach_openvino_as_u4_codes_with_the_same_product(tmp_path):
    """576 inputs in groups of 64 (SmolLM2's): 9 zero points a row, which ONNX Runtime pads to 5 bytes and OpenVINO's
    reader slices at run time. Sliced once when the model is read, they are a u4 constant of 9 a row, and the
    product is the one the codes define."""
    import onnx
    import onnxruntime
    import openvino
    from onnx import TensorProto, helper, numpy_helper

    from greencompress.runtimes.openvino_weights import slice_zero_points

    inputs, outputs, group = 576, 6, 64
    groups = inputs // group
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (outputs, inputs)).astype(np.uint8)
    zero_points = rng.integers(0, 16, (outputs, groups)).astype(np.uint8)
    scales = (rng.random((outputs, groups)) * 0.1 + 0.01).astype(np.float32)

    def two_a_byte(values):  # low nibble first, as MatMulNBits stores them
        return values[:, 0::2] | (values[:, 1::2] << 4)

    padded = np.concatenate([zero_points, np.zeros((outputs, 1), np.uint8)], axis=1)  # 9 -> 10 nibbles, 5 bytes
    initializers = [
        numpy_helper.from_array(two_a_byte(codes).reshape(outputs, groups, group // 2), "W"),
        numpy_helper.from_array(scales.reshape(-1), "S"),
        numpy_helper.from_array(two_a_byte(padded).reshape(-1), "Z"),
    ]
    node = helper.make_node(
        "MatMulNBits",
        ["A", "W", "S", "Z"],
        ["Y"],
        domain="com.microsoft",
        K=inputs,
        N=outputs,
        bits=4,
        block_size=group,
    )
    graph = helper.make_graph(
        [node],
        "product",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, inputs])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, outputs])],
        initializers,
    )
    path = tmp_path / "product.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]),
        path,
    )
    weights = (codes.reshape(outputs, groups, group).astype(np.float32) - zero_points[..., None]) * scales[..., None]
    activations = rng.standard_normal((3, inputs)).astype(np.float32)
    expected = activations @ weights.reshape(outputs, inputs).T
    scale = np.abs(expected).max()
    ran = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"A": activations})[0]
    assert np.abs(ran - expected).max() < 1e-2 * scale  # the file says what this test means (int8 activations)

    core = openvino.Core()
    model = core.read_model(str(path))
    assert slice_zero_points(model) == 1 and slice_zero_points(model) == 0
    stored = [
        op
        for op in model.get_ops()
        if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "u4"
    ]
    assert sorted(tuple(op.get_output_shape(0)) for op in stored) == [(outputs, groups, 1), (outputs, groups, group)]
    exact = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    served = core.compile_model(model, "CPU", exact)({"A": activations})[0]
    assert np.abs(served - expected).max() < 1e-5 * scale


def test_a_per_row_grid_cannot_be_stored_as_matmulnbits(llama):
    from transformers import AutoModelForCausalLM

    from greencompress.core.errors import GreencompressError
    from greencompress.runtimes.genai import QuantizedCheckpoint

    model = AutoModelForCausalLM.from_pretrained(llama)
    done = quantize_weights(model, WeightOnlyConfig(bits=8, group_size=None, symmetric=True, method="rtn"), [])
    with pytest.raises(GreencompressError, match="group_size"):
        QuantizedCheckpoint(model, done["grids"])


LM_RECIPE = """
name: tiny_lm
model: {{source: huggingface, task: text-generation, path: {folder}}}
data: {{kind: text, eval_samples: 2, prompts: {prompts}}}
stages:
  - weight_only: {{bits: 8, group_size: 32, symmetric: true, method: rtn}}
  - weight_only: {{bits: 4, group_size: 32, symmetric: false, method: aware+feedback, calibration_windows: 2,
                  calibration_tokens: 64}}
benchmark: {{batch_sizes: [1], sequence_lengths: [32], new_tokens: 16, windows: 2, threads: 1, runtimes: {runtimes}}}
"""


@pytest.mark.slow
def test_a_text_generation_run_judges_each_runtime_on_its_own_file_and_measures_prefill_and_decode(llama, tmp_path):
    from greencompress.pipeline.execute import run
    from greencompress.pipeline.recipe import load_recipe

    path, prompts = tmp_path / "lm.yaml", tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("Fair is foul", "Good sir", "To bed")))
    runtimes = "[onnxruntime-genai]" if GENAI else "[]"
    path.write_text(LM_RECIPE.format(folder=llama, runtimes=runtimes, prompts=prompts))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    report = run(load_recipe(path), run_dir, recipe_path=path)
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["kind"] == "text-generation 1.0" and saved["energy"]["measured"] is False
    assert saved["continuations"] == f"16 greedy tokens after 3 prompts of {prompts}"
    artifacts = {a["name"]: a for a in saved["artifacts"]}
    expected = {"fp32@torch", "int8-g32-sym-rtn@torch", "int4-g32-asym-aware+feedback@torch"}
    if GENAI:
        expected |= {"fp32@onnxruntime-genai", "int8-g32-sym-rtn@onnxruntime-genai"}
        expected |= {"int4-g32-asym-aware+feedback@onnxruntime-genai"}
        # The same FP32 weights built by the GenAI builder: the same perplexity on the same windows.
        assert artifacts["fp32@onnxruntime-genai"]["perplexity"] == pytest.approx(
            artifacts["fp32@torch"]["perplexity"], rel=1e-4
        )
        assert (
            artifacts["int4-g32-asym-aware+feedback@onnxruntime-genai"]["size_bytes"]
            < 0.6 * (artifacts["fp32@onnxruntime-genai"]["size_bytes"])
        )
    assert set(artifacts) == expected
    assert artifacts["fp32@torch"]["next_token_agreement"] == 1.0 and artifacts["fp32@torch"]["perplexity_change"] == 0
    assert artifacts["int4-g32-asym-aware+feedback@torch"]["perplexity_change"] != 0
    assert not artifacts["int8-g32-sym-rtn@torch"]["measured_speed"]  # rounded weights on FP32 kernels: no speed claim
    (shape,) = saved["shapes"]
    assert shape["shape"] == {"batch_size": 1, "prompt_tokens": 32, "new_tokens": 16}
    measured = {name for name, a in artifacts.items() if a["measured_speed"]}
    assert set(shape["results"]) == measured
    for figures in shape["results"].values():
        assert figures["time_to_first_token_ms"] > 0 and figures["joules_per_generated_token"] > 0
        assert figures["time_per_output_token_ms"]["p50"] <= figures["time_per_output_token_ms"]["p99"]
        assert figures["energy_method"] == "estimate"
    markdown = (run_dir / "report.md").read_text()
    assert "an estimate from CPU time, not a measurement" in markdown and "Decision." in markdown
    assert report.recommended() is None or report.recommended() in measured


def test_the_perplexity_gate_judges_every_rounded_model_on_every_runtime():
    from greencompress.report.generation import GeneratedArtifact, perplexity_gates

    def artifact(name: str, change: float) -> GeneratedArtifact:
        model, runtime = name.split("@")
        return GeneratedArtifact(name, model, runtime, "int4", None, None, 10.0, change, 0.9, None, True, {}, None)

    artifacts = (artifact("fp32@torch", 0.0), artifact("int8@genai", 0.01), artifact("int4@genai", 0.2))
    gates = perplexity_gates(5.0, artifacts)
    assert [(g["comparison"], g["passed"]) for g in gates] == [
        ("int8@genai vs fp32@torch", True),
        ("int4@genai vs fp32@torch", False),
    ]
    assert "+20.00% (budget +5%)" in gates[1]["detail"] and perplexity_gates(None, artifacts) == ()


GPT2_RECIPE = """
name: tiny_gpt2
model: {{source: huggingface, task: text-generation, path: {folder}}}
data: {{kind: text, eval_samples: 2}}
stages:
  - weight_only: {{bits: 4, group_size: 32, symmetric: true, method: feedback, calibration_windows: 2,
                  calibration_tokens: 64}}
benchmark: {{batch_sizes: [1], sequence_lengths: [32], new_tokens: 40, windows: 2, threads: 1, runtimes: {runtimes}}}
"""


@pytest.mark.slow
def test_a_gpt2_runs_on_pytorch_and_a_runtime_that_cannot_build_it_is_left_out_saying_why(tmp_path):
    from greencompress.pipeline.execute import run
    from greencompress.pipeline.recipe import load_recipe
    from tests.models.tiny_lm import tiny_gpt2_folder

    folder = tiny_gpt2_folder(tmp_path / "gpt2")
    path = tmp_path / "gpt2.yaml"
    path.write_text(GPT2_RECIPE.format(folder=folder, runtimes="[onnxruntime-genai]" if GENAI else "[]"))
    (tmp_path / "run").mkdir()
    report = run(load_recipe(path), tmp_path / "run", recipe_path=path)
    names = {a.name: a for a in report.artifacts}
    assert set(names) == {"fp32@torch", "int4-g32-sym-feedback@torch"}
    assert names["int4-g32-sym-feedback@torch"].stage["layers"] == 2 * 4  # GPT-2's Conv1D layers were rounded
    assert names["int4-g32-sym-feedback@torch"].perplexity_change != 0
    assert report.runtimes == ["torch"] and set(report.shapes[0].results) == {"fp32@torch"}
    if GENAI:
        assert "does not build ['GPT2LMHeadModel']" in report.runtimes_left_out["onnxruntime-genai"]


OPENVINO_RECIPE = """
name: tiny_openvino
model: {{source: huggingface, task: text-generation, path: {folder}}}
data: {{kind: text, eval_samples: 2}}
stages: []
benchmark: {{batch_sizes: [1, 2], sequence_lengths: [16], new_tokens: 8, windows: 2, threads: 1, runtimes: [openvino]}}
"""


@needs_genai
@pytest.mark.skipif(not OPENVINO, reason="pip install openvino")
def test_a_run_listing_openvino_measures_the_built_file_on_it_and_leaves_it_out_of_batches_it_cannot_run(
    llama, tmp_path, monkeypatch
):
    from greencompress.pipeline.execute import run
    from greencompress.pipeline.recipe import load_recipe
    from greencompress.runtimes import openvino_generate

    # Its attention left to OpenVINO's own reading, which runs one sequence: the batch-2 shape leaves it out.
    monkeypatch.setattr(openvino_generate, "fuse_attention", lambda model: 0)
    path, run_dir = tmp_path / "ov.yaml", tmp_path / "run"
    path.write_text(OPENVINO_RECIPE.format(folder=llama))
    run_dir.mkdir()
    report = run(load_recipe(path), run_dir, recipe_path=path)
    artifacts = {a.name: a for a in report.artifacts}
    assert set(artifacts) == {"fp32@torch", "fp32@openvino"} and report.runtimes == ["torch", "openvino"]
    assert report.runtimes_left_out == {} and "fp32@onnxruntime-genai" not in report.builds  # built, not measured
    assert artifacts["fp32@openvino"].perplexity == pytest.approx(artifacts["fp32@torch"].perplexity, rel=1e-4)
    assert report.builds["fp32@openvino"]["runtime"]["inference_precision"] == "f32"
    one, two = report.shapes
    assert set(one.results) == {"fp32@torch", "fp32@openvino"} and one.left_out == {}
    assert set(two.results) == {"fp32@torch"} and set(two.left_out) == {"fp32@openvino"}
    assert "GroupQueryAttention runs one sequence" in two.left_out["fp32@openvino"]
    written = (run_dir / "report.md").read_text()
    assert "not measured at this shape" in written
    assert (
        "- fp32@openvino: the file built by onnxruntime_genai.models.builder (fp32), run by openvino: reads" in written
    )


@pytest.mark.parametrize(
    "listed, measured",
    [
        ([], ["torch"]),
        (["onnxruntime"], ["torch", "onnxruntime-genai"]),  # ONNX Runtime generates through its GenAI loop
        (["onnxruntime", "onnxruntime-genai"], ["torch", "onnxruntime-genai"]),
    ],
)
def test_a_generation_run_measures_the_runtimes_listed_and_onnxruntime_through_its_genai_loop(llama, listed, measured):
    from types import SimpleNamespace

    from greencompress.pipeline.generate import runtimes_for

    chosen, left = runtimes_for(SimpleNamespace(benchmark=SimpleNamespace(runtimes=listed)))
    if GENAI:
        assert chosen == measured and left == {}
    else:
        assert chosen == ["torch"] and set(left) == set(measured) - {"torch"}
    chosen, left = runtimes_for(SimpleNamespace(benchmark=SimpleNamespace(runtimes=["openvino", "tensorrt"])))
    if GENAI and OPENVINO:  # OpenVINO generates from the file ONNX Runtime GenAI's builder writes
        assert chosen == ["torch", "openvino"] and set(left) == {"tensorrt"}
    else:
        assert chosen == ["torch"] and "openvino" in left
    assert left["tensorrt"] == "does not generate text in greencompress yet"


DEPTH_RECIPE = """
name: tiny_shallow
model: {{source: huggingface, task: text-generation, path: {folder}}}
data: {{kind: text, eval_samples: 2}}
stages:
  - depth: {{remove: 1, importance: similarity, samples: 2}}
  - prune: {{ffn: 0.5, heads: 0.5, importance: activation, round_to: 32}}
  - distill: {{tokens: 2048, window: 64, batch_windows: 2, learning_rate: 0.001}}
  - weight_only: {{bits: 4, group_size: 32, symmetric: true, method: rtn}}
  - dynamic_int8: {{}}
benchmark: {{batch_sizes: [1, 2], sequence_lengths: [32], new_tokens: 16, windows: 2, threads: 1, runtimes: []}}
"""


@pytest.mark.slow
def test_a_shallower_llama_is_healed_and_rounded_and_every_model_measured_at_batch_1_and_2(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from greencompress.measure.perplexity import perplexity
    from greencompress.models.corpus import load_corpus
    from greencompress.models.data import DataSpec
    from greencompress.pipeline.execute import run
    from greencompress.pipeline.recipe import load_recipe
    from tests.models.tiny_lm import tiny_llama_folder

    folder = tiny_llama_folder(tmp_path / "llama3", layers=3)
    path, run_dir = tmp_path / "shallow.yaml", tmp_path / "run"
    path.write_text(DEPTH_RECIPE.format(folder=folder))
    run_dir.mkdir()
    report = run(load_recipe(path), run_dir, recipe_path=path)
    artifacts = {a.name: a for a in report.artifacts}
    shallow = artifacts["depth1@torch"]
    assert shallow.measured_speed and shallow.precision == "fp32" and shallow.perplexity_change != 0
    assert shallow.stage["before"] == 3 and shallow.stage["after"] == 2 and len(shallow.stage["ranking"]) == 3
    assert "Block Influence" in shallow.stage["importance"]
    narrow = artifacts["depth1-ffn64-kv1@torch"]  # half the FFN neurons and one of two key/value groups
    assert narrow.measured_speed and (narrow.stage["ffn_before"], narrow.stage["ffn_after"]) == (128, 64)
    assert (narrow.stage["heads_before"], narrow.stage["heads_after"]) == (4, 2)
    assert narrow.perplexity != shallow.perplexity
    healed = artifacts["depth1-ffn64-kv1-distilled@torch"]  # distilled from the original, from the narrower model
    assert healed.measured_speed and healed.stage["tokens"] == 2048 and healed.stage["steps"] == 16
    assert healed.perplexity != narrow.perplexity
    rounded = artifacts[
        "depth1-ffn64-kv1-distilled-int4-g32-sym-rtn@torch"
    ]  # the weight-only stage rounded the healed model
    assert not rounded.measured_speed and rounded.perplexity != healed.perplexity
    w8a8 = artifacts[
        "depth1-ffn64-kv1-distilled-w8a8-dynamic@torch"
    ]  # PyTorch's own int8 kernels: its speed is measured
    assert w8a8.measured_speed and w8a8.precision == "int8 W8A8 dynamic" and w8a8.perplexity != healed.perplexity
    one, two = report.shapes  # two different prompts decoded together at batch 2
    assert (one.shape["batch_size"], two.shape["batch_size"]) == (1, 2)
    measured = {name for name, a in artifacts.items() if a.measured_speed}
    assert set(one.results) == set(two.results) == measured
    assert all(figures["tokens_per_s"] > 0 for figures in two.results.values())
    markdown = (run_dir / "report.md").read_text()
    assert markdown.count("At this shape, the least decode energy per generated token") == 2
    assert one.dense_twins["depth1-ffn64-kv1-distilled@torch"] == "fp32@torch"  # paired with the original
    assert "- depth1@torch against fp32@torch: TPOT " in markdown
    assert narrow.structure_removed[1:] == (
        "FFN neurons 128 -> 64 per layer",
        "key/value groups 2 -> 1 (query heads 4 -> 2) per layer",
    ) and narrow.structure_removed[0].startswith("decoder layers 3 -> 2 (removed layer ")
    assert healed.structure_removed == narrow.structure_removed and artifacts["fp32@torch"].structure_removed == ()
    points = {name: (artifacts[name].perplexity, one.results[name]["joules_per_generated_token"]) for name in measured}
    front = report.front(0)  # those no other beats on both perplexity and J per generated token, cheapest first
    beaten = {
        n for n, (q, j) in points.items() if any(p <= q and k <= j and (p, k) != (q, j) for p, k in points.values())
    }
    assert front and set(front) == set(points) - beaten and front == sorted(front, key=lambda n: points[n][1])
    assert f"| {front[0]} | " in markdown.split("the front")[1]
    # The saved folder reloads with plain transformers and scores the run's perplexity on the run's windows.
    saved = run_dir / "models" / "depth1-ffn64-kv1-distilled"
    reloaded = AutoModelForCausalLM.from_pretrained(saved).eval()
    config = reloaded.config
    assert (config.num_hidden_layers, config.intermediate_size, config.num_key_value_heads) == (2, 64, 1)
    corpus = load_corpus(DataSpec(kind="text"), AutoTokenizer.from_pretrained(saved), 256)
    measured = perplexity(torch_logits(reloaded), corpus.evaluation, 256, 128, 2)
    assert measured.perplexity == pytest.approx(healed.perplexity, rel=1e-5)


@needs_genai
def test_a_shallower_narrower_folder_builds_for_genai_with_its_logits_and_its_codes_keep_its_shape(tmp_path):
    """The GenAI builder reads a shallower, narrower model's own config: FP32 from its saved folder, weight-only
    codes from the module (whose config says one layer, half the FFN and one key/value group fewer than the source
    folder's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from greencompress.compress.decoder_prune import keep_ffn_neurons, keep_kv_groups
    from greencompress.compress.decoder_surgery import remove_decoder_layers
    from greencompress.runtimes import genai
    from tests.models.tiny_lm import tiny_llama_folder

    source = tiny_llama_folder(tmp_path / "llama3", layers=3)
    model = AutoModelForCausalLM.from_pretrained(source).eval()
    remove_decoder_layers(model, [1])
    keep_ffn_neurons(model, [torch.arange(0, 128, 2)] * 2)
    keep_kv_groups(model, [[1], [0]])
    model.save_pretrained(tmp_path / "shallow")
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path / "shallow")
    genai.build(tmp_path / "shallow", tmp_path / "fp32", 1)
    ids = np.random.default_rng(4).integers(1, 380, (1, 40))
    served, expected = genai.onnx_logits(tmp_path / "fp32", 1)(ids), torch_logits(model)(ids)
    assert np.abs(served - expected).max() < 1e-3 * np.abs(expected).max()
    done = quantize_weights(model, WeightOnlyConfig(bits=4, group_size=32, symmetric=True, method="rtn"), [])
    genai.build(source, tmp_path / "int4", 1, genai.QuantizedCheckpoint(model, done["grids"]), 1)
    config = json.loads((tmp_path / "int4" / "genai_config.json").read_text())
    decoder = config["model"]["decoder"]
    assert (decoder["num_hidden_layers"], decoder["num_attention_heads"], decoder["num_key_value_heads"]) == (2, 2, 1)
    served, expected = genai.onnx_logits(tmp_path / "int4", 1)(ids), torch_logits(model)(ids)
    assert np.abs(served - expected).max() < 1e-3 * np.abs(expected).max()


RESUME_RECIPE = """
name: tiny_resume
model: {{source: huggingface, task: text-generation, path: {folder}}}
data: {{kind: text, eval_samples: 1}}
stages:
  - depth: {{remove: 1, importance: similarity, samples: 1}}
  - distill: {{tokens: 1024, window: 64, batch_windows: 2, learning_rate: 0.001}}
benchmark: {{batch_sizes: [1], sequence_lengths: [16], new_tokens: 8, windows: 2, threads: 1, runtimes: []}}
"""


@pytest.mark.slow
def test_an_interrupted_lm_run_resumes_with_the_layers_it_removed_and_the_model_it_healed(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from greencompress.pipeline import generate
    from greencompress.pipeline.execute import run
    from greencompress.pipeline.recipe import load_recipe

    folder = tiny_llama_folder(tmp_path / "llama3", layers=3)
    path, run_dir = tmp_path / "resume.yaml", tmp_path / "run"
    path.write_text(RESUME_RECIPE.format(folder=folder))
    run_dir.mkdir()
    measure = generate.benchmark_generation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "benchmark_generation", interrupted)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C while measuring: both structural stages had finished
        run(load_recipe(path), run_dir, recipe_path=path)
    healed = AutoModelForCausalLM.from_pretrained(run_dir / "models" / "depth1-distilled")

    def again(*args, **kwargs):
        raise AssertionError("a finished structural stage ran again")

    monkeypatch.setattr(generate, "benchmark_generation", measure)
    monkeypatch.setattr(generate, "choose_layers", again)
    monkeypatch.setattr(generate, "distill", again)
    report = run(load_recipe(run_dir / "recipe.resolved.yaml"), run_dir)
    artifacts = {a.name: a for a in report.artifacts}
    assert artifacts["depth1@torch"].stage["after"] == 2 and artifacts["depth1-distilled@torch"].stage["tokens"] == 1024
    ids = np.random.default_rng(5).integers(1, 380, (1, 24))
    reloaded = AutoModelForCausalLM.from_pretrained(run_dir / "models" / "depth1-distilled")
    assert np.array_equal(torch_logits(reloaded)(ids), torch_logits(healed)(ids))
    assert set(report.shapes[0].results) == {"fp32@torch", "depth1@torch", "depth1-distilled@torch"}


def test_a_model_with_structure_removed_is_paired_with_its_dense_twin_at_the_same_precision():
    from greencompress.measure.generation import GenerationResult, GenerationShape
    from greencompress.pipeline.generate import _shape_result

    shape = GenerationShape(1, 32, 16)

    def result(tpot_ms: float) -> GenerationResult:
        rounds = (1.0, 1.02, 0.98, 1.01, 0.99)  # the machine's drift, shared by every generator in a round
        tpot = tuple(tpot_ms * drift for drift in rounds)
        joules = tuple(0.01 * t for t in tpot)
        return GenerationResult(shape, 5, 2, tpot, tpot, tpot, joules, joules, "estimate", False)

    results = {
        "fp32@torch": result(40.0),
        "fp32@onnxruntime-genai": result(20.0),
        "int4@onnxruntime-genai": result(8.0),
        "depth8@onnxruntime-genai": result(15.0),
        "depth8-int4@onnxruntime-genai": result(4.0),
    }
    twins = {"depth8": "fp32", "depth8-int4": "int4", "int4-only-here": "absent"}
    measured = _shape_result(shape, results, twins)
    assert measured.dense_twins == {
        "depth8@onnxruntime-genai": "fp32@onnxruntime-genai",
        "depth8-int4@onnxruntime-genai": "int4@onnxruntime-genai",
    }
    half = measured.ratios["depth8-int4@onnxruntime-genai"]["vs_dense:joules_per_generated_token"]
    assert half["ratio"] == pytest.approx(0.5) and half["low"] <= 0.5 <= half["high"]
    assert "vs_dense:time_per_output_token_ms" not in measured.ratios["int4@onnxruntime-genai"]
