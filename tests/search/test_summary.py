"""The chosen candidate, the budget and the verdict, on hand-made trials."""

from __future__ import annotations

import dataclasses
import json

import pytest

from greencompress.core.errors import GreencompressError
from greencompress.search.summary import (
    Summary,
    TrialRow,
    choose,
    pareto_numbers,
    proxy_quality,
    render_html,
    render_markdown,
    table_rows,
    write_summary,
)
from greencompress.search.trial import Outcome

ANCHOR_JOULES, ANCHOR_MS = 0.02, 1.0  # the original FP32 model on ONNX Runtime, as every hand-made trial measured it


def interval(ratio: float, spread: float = 0.0) -> dict:
    return {"ratio": ratio, "ci95": [ratio - spread, ratio + spread], "rounds": 5, "within_noise": False}


def outcome(top1: float, joules: float, latency_ms: float, ci: float = 0.0001, latency_ratio=None) -> Outcome:
    return Outcome(
        candidate="onnxruntime-pruned-finetuned-int8",
        baseline="onnxruntime-int8",
        runtime="onnxruntime",
        batch_size=1,
        top1=top1,
        baseline_top1=91.4,
        reference_top1=91.4,
        joules_per_inference=joules,
        joules_ci95=ci,
        latency_p50_ms=latency_ms,
        size_bytes=300_000,
        energy_method="cpu-time-estimate",
        measured=False,
        latency_ratio=latency_ratio,
        energy_ratio=None,
        anchor="onnxruntime-fp32",
        anchor_energy_ratio=interval(joules / ANCHOR_JOULES, ci / ANCHOR_JOULES),
        anchor_latency_ratio=interval(latency_ms / ANCHOR_MS),
    )


def row(number: int, result: Outcome | None, budget: float = 1.5, state: str = "complete", proxy=None) -> TrialRow:
    feasible = result is not None and state == "complete" and result.reference_top1 - result.top1 <= budget
    return TrialRow(number, state, {"prune_ratio": 0.3}, result, proxy, "", "", feasible)


def test_the_lowest_energy_within_the_budget_is_chosen_never_one_over_it():
    rows = [
        row(0, outcome(91.0, 0.0100, 0.60)),
        row(1, outcome(88.0, 0.0050, 0.30)),  # cheapest, but 3.4 points down: over the 1.5 budget
        row(2, outcome(90.2, 0.0080, 0.50)),
        row(3, None, state="pruned"),
    ]
    assert choose(rows) == 2


def test_energy_ties_within_the_lowest_s_interval_go_to_the_lower_latency():
    rows = [
        row(0, outcome(91.0, 0.0080, 0.55, ci=0.0005)),
        row(1, outcome(90.5, 0.0082, 0.45, ci=0.0005)),  # inside trial 0's interval: a tie, and faster
        row(2, outcome(90.9, 0.0095, 0.30, ci=0.0020)),
    ]  # faster still; intervals overlap, but its J is not
    assert choose(rows) == 1  # inside the lowest's interval: more energy


def test_nothing_within_the_budget_chooses_nothing_and_says_so(tmp_path):
    rows = [row(0, outcome(85.0, 0.0050, 0.30)), row(1, None, state="pruned")]
    assert choose(rows) is None
    summary = Summary(["top1", "energy_ratio"], 1.5, 1, rows, [0], None, "No candidate within 1.5 points")
    assert write_summary(summary, tmp_path) is None
    assert not (tmp_path / "best.yaml").exists()
    assert json.loads((tmp_path / "search.json").read_text())["chosen"] is None


def test_front_holds_the_non_dominated_complete_trials():
    rows = [
        row(0, outcome(91.0, 0.0100, 0.6)),
        row(1, outcome(90.0, 0.0110, 0.6)),
        row(2, outcome(89.0, 0.0070, 0.4)),
        row(3, None, state="pruned"),
    ]
    assert pareto_numbers(rows, ["top1", "energy_ratio"]) == [0, 2]
    assert pareto_numbers(rows, ["energy_ratio"]) == [2]


def test_summary_files_show_the_choice_the_estimate_and_best_yaml(tmp_path):
    run_dir = tmp_path / "trial-001"
    run_dir.mkdir()
    (run_dir / "recipe.resolved.yaml").write_text("name: t1\n")
    faster = {"ratio": 0.82, "ci95": [0.75, 0.90], "rounds": 5, "within_noise": False}
    rows = [
        row(0, outcome(91.0, 0.0100, 0.6)),
        TrialRow(
            1,
            "complete",
            {"prune_ratio": 0.25},
            outcome(90.5, 0.0080, 0.5, latency_ratio=faster),
            {"ratio": 0.85, "low": 0.8, "high": 0.9},
            "",
            str(run_dir),
            True,
        ),
    ]
    summary = Summary(["top1", "energy_ratio"], 1.5, 1, rows, [0, 1], 1, "Trial 1 is faster", proxy_quality(rows))
    best = write_summary(summary, tmp_path)
    assert best.read_text() == "name: t1\n"
    markdown = render_markdown(summary)
    assert "an ESTIMATE, not a measurement" in markdown
    assert "0.820x [0.750, 0.900]" in markdown and "chosen" in markdown
    assert "J/inference vs onnxruntime-fp32 (paired, ranks)" in markdown and "0.400x [0.395, 0.405]" in markdown
    assert "mean absolute error 0.030" in markdown  # proxy 0.85 against 0.82 measured
    assert "data:image/png;base64," in render_html(summary)


def test_a_trial_is_scored_on_the_cheapest_of_its_serving_runtimes():
    from greencompress.search.trial import read_outcome
    from tests.report.test_report import make_report, result

    report = make_report(
        [
            result("onnxruntime-fp32", "onnxruntime", "fp32", 2.0, 0.10),
            result("onnxruntime-int8", "onnxruntime", "int8", 1.2, 0.06),
            result("onnxruntime-pruned-int8", "onnxruntime", "int8", 1.0, 0.05),
            result("openvino-fp32", "openvino", "fp32", 1.5, 0.08),
            result("openvino-int8", "openvino", "int8", 0.8, 0.04),
            result("openvino-pruned-int8", "openvino", "int8", 0.6, 0.03),
        ]
    )
    both = read_outcome(report, ["onnxruntime", "openvino"], 1)
    assert (both.runtime, both.candidate, both.joules_per_inference) == ("openvino", "openvino-pruned-int8", 0.03)
    # Its pairing stays on its own runtime: against the unpruned int8 model on OpenVINO.
    assert both.baseline == "openvino-int8" and abs(both.energy_ratio["ratio"] - 0.75) < 1e-9
    alone = read_outcome(report, ["onnxruntime"], 1)  # a serving runtime the user named alone
    assert (alone.runtime, alone.joules_per_inference) == ("onnxruntime", 0.05)


def test_the_proxy_is_judged_on_the_runtime_the_trial_was_scored_on():
    measured = {"ratio": 0.60, "ci95": [0.55, 0.65], "rounds": 5, "within_noise": False}
    on_openvino = dataclasses.replace(outcome(91.0, 0.0100, 0.6, latency_ratio=measured), runtime="openvino")
    proxy = {
        "ratio": 0.58,
        "low": 0.5,
        "high": 0.66,
        "runtime": "openvino",
        "by_runtime": {
            "onnxruntime": {"ratio": 0.90, "low": 0.85, "high": 0.95},
            "openvino": {"ratio": 0.58, "low": 0.5, "high": 0.66},
        },
    }
    rows = [row(0, on_openvino, proxy=proxy)]
    assert abs(proxy_quality(rows)["mean_abs_error"] - 0.02) < 1e-9  # openvino's 0.58, not onnxruntime's 0.90
    headers, (cells,) = table_rows(Summary(["top1", "energy_ratio"], 1.5, 1, rows, [0], 0, "v"))
    assert cells[headers.index("runtime")] == "openvino" and cells[headers.index("proxy (untrained)")].startswith(
        "0.580x"
    )


def test_no_trial_stays_running_when_its_worker_is_gone_and_each_dead_trial_names_its_retry():
    import subprocess

    import optuna
    from optuna.trial import TrialState

    from greencompress.search.summary import rows_of
    from greencompress.search.trial import host_name

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    dead_pid = subprocess.Popen(["true"])  # a process id that no longer runs
    dead_pid.wait()
    killed = study.ask()  # left RUNNING by a SIGKILLed worker, then failed on resume and retried
    study.tell(killed, state=TrialState.FAIL)
    retry = study.ask()
    retry.set_user_attr("retry_of", killed.number)
    retry.set_user_attr("retry_of_reason", "its worker (pid 1 on h) was killed or crashed before finishing it")
    study.tell(retry, [90.0, 0.1])
    stale = study.ask()  # another host's worker stopped beating: Optuna failed it and retried it
    study.tell(stale, state=TrialState.FAIL)
    stale_retry = study.ask()
    study._storage.set_trial_system_attr(stale_retry._trial_id, "failed_trial", stale.number)
    study.tell(stale_retry, [91.0, 0.1])
    gone = study.ask()  # killed, and the search not run again yet
    gone.set_user_attr("host", host_name())
    gone.set_user_attr("pid", dead_pid.pid)
    alive = study.ask()  # a worker still at work
    alive.set_user_attr("host", host_name())
    alive.set_user_attr("pid", __import__("os").getppid())
    rows = {row.number: row for row in rows_of(study)}
    assert rows[killed.number].reason == (
        f"its worker (pid 1 on h) was killed or crashed before finishing it; retried as trial {retry.number}"
    )
    assert (
        rows[stale.number].reason
        == f"its worker stopped beating (heartbeat expired); retried as trial {stale_retry.number}"
    )
    assert rows[gone.number].state == "fail" and "run the search again to retry it" in rows[gone.number].reason
    assert rows[alive.number].state == "running"


def test_two_searches_rank_their_common_trials_alike_though_the_machine_drifted_between_trials():
    """Hand-made rounds: each trial's run measures the anchor and its candidate in the same interleaved rounds.
    In the second search the machine ran 30% slower while trial 1 ran (another tenant, a warmer CPU): its absolute
    joules rank it last there, while its ratio to the anchor, drifting with it, keeps every trial's place."""
    from greencompress.search.trial import read_outcome
    from tests.report.test_report import make_report, result

    candidate_share = {0: 0.50, 1: 0.40, 2: 0.45}  # what each trial's model costs against the original, truly

    def trial_report(number: int, machine: float, rounds: tuple):
        share = candidate_share[number]
        return make_report(
            [
                result("onnxruntime-fp32", "onnxruntime", "fp32", 2.0 * machine, 0.02 * machine, rounds=rounds),
                result("onnxruntime-int8", "onnxruntime", "int8", 1.2 * machine, 0.012 * machine, rounds=rounds),
                result(
                    "onnxruntime-pruned-int8",
                    "onnxruntime",
                    "int8",
                    2.0 * share * machine,
                    0.02 * share * machine,
                    rounds=rounds,
                ),
            ]
        )

    steady = (1.0, 1.02, 0.98, 1.01, 0.99)
    first = {n: read_outcome(trial_report(n, 1.0, steady), ["onnxruntime"], 1) for n in candidate_share}
    second = {
        n: read_outcome(
            trial_report(n, 1.3 if n == 1 else 1.0, tuple(1.0 + 0.05 * i for i in range(5))), ["onnxruntime"], 1
        )
        for n in candidate_share
    }
    by_ratio = [sorted(outcomes, key=lambda n: outcomes[n].objective("energy_ratio")) for outcomes in (first, second)]
    assert by_ratio[0] == by_ratio[1] == [1, 2, 0]
    assert second[1].anchor == "onnxruntime-fp32" and abs(second[1].anchor_energy_ratio["ratio"] - 0.40) < 1e-9
    # Ranked by absolute joules, the second search would have put the best trial last.
    assert sorted(second, key=lambda n: second[n].joules_per_inference) == [2, 0, 1]
    rows = [row(n, second[n]) for n in second]
    assert choose(rows) == 1


def test_a_language_model_trial_is_read_on_its_cheapest_runtime_against_the_pytorch_anchor():
    from greencompress.measure.generation import GenerationResult, GenerationShape
    from greencompress.pipeline.generate import _shape_result
    from greencompress.report.generation import GeneratedArtifact, GenerationReport
    from greencompress.search.trial import read_generation_outcome

    shape = GenerationShape(1, 32, 16)

    def result(tpot_ms: float) -> GenerationResult:
        drift = (1.0, 1.02, 0.98, 1.01, 0.99)  # the machine's, shared by every generator in a round
        tpot = tuple(tpot_ms * d for d in drift)
        return GenerationResult(
            shape,
            5,
            2,
            tpot,
            tpot,
            tpot,
            tuple(0.02 * t for t in tpot),
            tuple(0.01 * t for t in tpot),
            "estimate",
            False,
        )

    def artifact(name: str, change: float, speed: bool = True) -> GeneratedArtifact:
        model, _, runtime = name.rpartition("@")
        return GeneratedArtifact(
            name,
            model,
            runtime,
            "int4",
            f"/runs/genai/{model}",
            1000,
            30 * (1 + change),
            change,
            0.9,
            0.8,
            speed,
            {"folder": "/runs/models/x"},
            None,
            ("decoder layers 30 -> 22",),
        )

    results = {
        "fp32@torch": result(40.0),
        "depth8-int4@torch": result(30.0),
        "depth8-int4@onnxruntime-genai": result(10.0),
    }
    artifacts = (
        artifact("fp32@torch", 0.0),
        artifact("depth8-int4@torch", 0.2, speed=False),
        artifact("depth8-int4@onnxruntime-genai", 0.21),
    )
    measured = _shape_result(
        shape, {name: results[name] for name in ("fp32@torch", "depth8-int4@onnxruntime-genai")}, {}
    )
    report = GenerationReport("trial", "now", {}, "plays", {}, {}, 2, {}, [], {}, {}, artifacts, (measured,), 5.0, 1.0)
    outcome = read_generation_outcome(report, 1, 32)
    # Rounded weights on PyTorch's FP32 kernels are not measured for speed: the GenAI file is the candidate.
    assert (outcome.candidate, outcome.runtime, outcome.anchor) == (
        "depth8-int4@onnxruntime-genai",
        "onnxruntime-genai",
        "fp32@torch",
    )
    assert outcome.anchor_energy_ratio["ratio"] == pytest.approx(0.25) and outcome.anchor_latency_ratio[
        "ratio"
    ] == pytest.approx(0.25)
    assert outcome.anchor_prefill_energy_ratio["ratio"] == pytest.approx(0.25)
    assert outcome.perplexity_increase == pytest.approx(21.0) and outcome.top1 is None and outcome.accuracy_drop is None
    assert outcome.path == "/runs/genai/depth8-int4" and outcome.unit == "generated token"
    assert [
        outcome.objective(name) for name in ("perplexity_increase", "energy_ratio", "prefill_energy_ratio")
    ] == pytest.approx([21.0, 0.25, 0.25])
    with pytest.raises(GreencompressError, match="not measured at batch 2, prompt 32"):
        read_generation_outcome(report, 2, 32)


def test_a_language_model_front_measured_again_decides_the_choice_among_the_feasible():
    rows = [
        row(0, outcome(91.0, 0.0100, 0.60)),
        row(1, outcome(91.0, 0.0080, 0.60)),  # cheapest in its own trial's rounds
        row(2, outcome(91.0, 0.0090, 0.60)),
    ]
    assert choose(rows) == 1
    again = {
        1: {"energy_ratio": interval(0.50, 0.01), "latency_ratio": interval(0.5)},
        2: {"energy_ratio": interval(0.40, 0.01), "latency_ratio": interval(0.4)},  # cheaper measured beside it
    }
    assert choose(rows, again) == 2
    assert choose(rows, {0: again[1]}) == 0  # only the re-measured are chosen among
