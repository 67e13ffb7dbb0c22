"""A text-generation run's decision: the least energy per generated token within the perplexity budget, preferring,
among the deployments that save energy per token, those whose first token is not measurably slower than the fastest
FP32 runtime's."""

from __future__ import annotations

from greencompress.measure.generation import GenerationResult, GenerationShape
from greencompress.pipeline.generate import _shape_result
from greencompress.report.generation import GeneratedArtifact, GenerationReport

SHAPE = GenerationShape(1, 128, 64)
DRIFT = (1.0, 1.03, 0.97, 1.01, 0.99)  # the machine's, shared by every generator in a round


def result(ttft_ms: float, tpot_ms: float, drift: tuple = DRIFT) -> GenerationResult:
    tpot = tuple(tpot_ms * d for d in drift)
    ttft = tuple(ttft_ms * d for d in DRIFT)
    return GenerationResult(
        SHAPE, 5, 2, ttft, tpot, tpot, tuple(1e-4 * t for t in ttft), tuple(0.014 * t for t in tpot), "estimate", False
    )


def artifact(name: str, change: float) -> GeneratedArtifact:
    model, _, runtime = name.rpartition("@")
    return GeneratedArtifact(
        name, model, runtime, "int4", None, None, 46 * (1 + change), change, 0.9, 0.5, True, {}, None
    )


def report(figures: dict[str, tuple], noisy: dict[str, tuple] | None = None) -> GenerationReport:
    """figures: name -> (perplexity change, TTFT ms, TPOT ms); noisy: name -> its own decode drift per round."""
    artifacts = tuple(artifact(name, change) for name, (change, _, _) in figures.items())
    results = {name: result(ttft, tpot, (noisy or {}).get(name, DRIFT)) for name, (_, ttft, tpot) in figures.items()}
    shape = _shape_result(SHAPE, results, {})
    energy = {"method": "estimate"}
    return GenerationReport("r", "now", {}, "plays", {}, {}, 2, energy, [], {}, {}, artifacts, (shape,), 5.0, 1.0)


FP32 = {"fp32@torch": (0.0, 164.0, 33.0), "fp32@onnxruntime-genai": (0.0, 117.0, 19.2)}


def test_a_deployment_slower_to_its_first_token_gives_way_to_the_cheapest_that_is_not_and_the_decision_says_so():
    # Intel Xeon with AMX, 2026-12-04: ORT's int4 decodes fastest but prefills 1.33x its FP32 file; OpenVINO's reading
    # of the same file prefills faster than that FP32 file and decodes slower than ORT's.
    run = report(
        {
            **FP32,
            "mixed@onnxruntime-genai": (0.040, 157.0, 7.3),
            "mixed@openvino": (0.039, 102.0, 9.1),
            "int4@onnxruntime-genai": (0.249, 100.0, 5.0),  # cheaper still, outside the perplexity budget
        }
    )
    assert run.cheapest() == "mixed@onnxruntime-genai" and run.recommended() == "mixed@openvino"
    assert run.slower_first_token("mixed@onnxruntime-genai")["low"] > 1.0
    assert run.slower_first_token("mixed@openvino") is None
    decision = run.decision()
    assert decision.startswith("Deploy mixed@openvino:")
    assert "time to first token 0.87x" in decision
    assert "mixed@onnxruntime-genai spends less per generated token (0.80x this choice's, estimate)" in decision
    assert "its first token takes 1.34x" in decision


def test_the_cheapest_is_the_decision_when_its_first_token_is_not_slower_or_when_every_candidate_is_slower():
    even = report({**FP32, "mixed@onnxruntime-genai": (0.04, 117.0, 7.3), "mixed@openvino": (0.04, 102.0, 9.1)})
    assert even.recommended() == even.cheapest() == "mixed@onnxruntime-genai"
    assert "spends less" not in even.decision()
    slower = report({**FP32, "mixed@onnxruntime-genai": (0.04, 157.0, 7.3), "mixed@openvino": (0.04, 140.0, 9.1)})
    assert slower.recommended() == "mixed@onnxruntime-genai"
    assert "Every candidate within the budget is slower than fp32@onnxruntime-genai to its first token" in (
        slower.decision()
    )
    # FP32 is within any budget and never slower than itself, but saves nothing: it is the decision only when no
    # compressed deployment is within the budget.
    none = report({**FP32, "int4@onnxruntime-genai": (0.249, 100.0, 5.0)})
    assert none.recommended() == "fp32@onnxruntime-genai"


def test_a_cheaper_deployment_whose_saving_is_within_noise_is_named_as_such():
    # Its decode per round swings from 0.3x to 4x: its median is the cheapest, its saving against FP32 unresolved.
    swinging = (0.3, 4.0, 0.35, 3.9, 0.9)
    run = report(
        {**FP32, "mixed@onnxruntime-genai": (0.04, 110.0, 7.3), "mixed@openvino": (0.04, 100.0, 6.0)},
        noisy={"mixed@openvino": swinging},
    )
    assert run.cheapest() == "mixed@openvino" and run.recommended() == "mixed@onnxruntime-genai"
    assert "its saving against fp32@onnxruntime-genai is within this measurement's noise" in run.decision()
