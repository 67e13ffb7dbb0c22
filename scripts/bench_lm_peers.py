"""SmolLM2-135M against the tools users would otherwise pick, in one process, interleaved, on the same prompts.

    python scripts/bench_lm_peers.py --run runs/smollm2_int4/STAMP        # a finished recipes/smollm2_int4.yaml run

Each artifact generates greedily at batch 1 (prompts of 128 tokens from the evaluation plays, never repeated, 64
new tokens), prefill and decode metered apart (measure/generation.py), and its perplexity is measured on the same
8 windows of 256 tokens as the run's. Compared:

- PyTorch FP32 eager (the reference);
- the run's recommended ONNX Runtime GenAI folder (greencompress's codes);
- ONNX Runtime GenAI's model builder with its own int4 (`-p int4`: round to nearest, its defaults: symmetric,
  blocks of 32, the embedding and head rounded too);
- optimum-intel's OpenVINO export with NNCF weight compression (`OVWeightQuantizationConfig`: int8, and int4
  symmetric in groups of 64, data-free), run by OpenVINO GenAI's LLMPipeline (needs optimum-intel, nncf,
  openvino-genai; optimum-intel 2.2 requires transformers < 5.6, so this runs in an environment of its own);
- torchao's int8 weight-only, where it installs (`pip install torchao`).

A peer that is not installed is left out, and the table says which and why.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from greencompress.core.hardware import cpu_info
from greencompress.measure.energy import EnergySpec, select_meter
from greencompress.measure.generation import GenerationShape, TorchGenerator, benchmark_generation, paired
from greencompress.measure.perplexity import perplexity, torch_logits
from greencompress.models.corpus import load_corpus
from greencompress.models.data import DataSpec
from greencompress.report.generation import GenerationReport
from greencompress.runtimes import genai
from greencompress.runtimes.pytorch import set_threads


class StreamingGenerator:
    """measure/generation.Generator over a pipeline that only generates whole answers with a token callback
    (OpenVINO GenAI's LLMPipeline): the answer runs in a thread whose callback waits for each `step`, so prefill
    and every decode step happen inside the caller's windows, one at a time. The pipeline holds one sequence: a
    new prefill cancels the one before (the benchmark decodes only the last prompt's state when one query's
    decode fills the meter's window, which it does at these sizes; otherwise `step` says so)."""

    sequences = 1  # measure/generation.py decodes only the last prompt's state

    def __init__(self, pipeline, new_tokens: int):
        self.pipeline, self.new_tokens, self.current = pipeline, new_tokens, None

    def prefill(self, ids: np.ndarray):
        import openvino as ov
        import openvino_genai

        self._cancel()
        state = {"tokens": [], "queue": queue.Queue(), "release": threading.Semaphore(0), "stop": False}

        class Streamer(openvino_genai.StreamerBase):
            """Receives token ids (a plain callback receives decoded text)."""

            def write(self, token):
                for one in token if isinstance(token, (list, tuple)) else [token]:
                    state["queue"].put(int(one))
                    state["release"].acquire()  # the next token waits for the caller's next step
                    if state["stop"]:
                        return openvino_genai.StreamingStatus.CANCEL
                return openvino_genai.StreamingStatus.RUNNING

            def end(self):
                pass

        streamer = Streamer()
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = config.min_new_tokens = self.new_tokens + 1
        config.do_sample = False
        inputs = openvino_genai.TokenizedInputs(
            ov.Tensor(ids.astype(np.int64)), ov.Tensor(np.ones_like(ids, dtype=np.int64))
        )
        state["thread"] = threading.Thread(target=self.pipeline.generate, args=(inputs, config, streamer), daemon=True)
        state["thread"].start()
        state["tokens"].append(state["queue"].get())
        self.current = state
        return state

    def step(self, state):
        if state is not self.current:
            raise RuntimeError("this pipeline holds one sequence: only the last prompt's state can be decoded")
        state["release"].release()
        state["tokens"].append(state["queue"].get())
        return state

    def tokens(self, state) -> np.ndarray:
        return np.asarray(state["tokens"])[None]

    def _cancel(self) -> None:
        if self.current is not None:
            self.current["stop"] = True
            self.current["release"].release()
            self.current["thread"].join()
            self.current = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished recipes/smollm2_int4.yaml run folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/lm-peers"))
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    set_threads(args.threads)
    report = GenerationReport.from_dict(json.loads((args.run / "report.json").read_text()))
    folder = Path(report.model["folder"])
    chosen = report.recommended()
    if chosen is None:
        raise SystemExit(f"{args.run}: the run recommends no artifact (none within its perplexity budget)")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    corpus = load_corpus(DataSpec(kind="text"), tokenizer, 256)
    fp32 = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").eval()
    generators, logits, left_out = {"PyTorch FP32 eager": TorchGenerator(fp32)}, {}, {}
    logits["PyTorch FP32 eager"] = torch_logits(fp32)
    ours = args.run / "genai" / chosen.split("@")[0]
    generators[f"greencompress: {chosen}"] = genai.GenAIGenerator(ours, 80)
    logits[f"greencompress: {chosen}"] = genai.onnx_logits(ours, args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    built = args.work / "genai-builder-int4"
    if not built.is_dir():
        subprocess.run(
            [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(folder), "-o", str(built)]
            + ["-p", "int4", "-e", "cpu", "-c", str(args.work / "cache")],
            check=True,
            capture_output=True,
        )
        genai._set_threads(built / "genai_config.json", args.threads)
    generators["ORT GenAI builder int4 (its RTN)"] = genai.GenAIGenerator(built, 80)
    logits["ORT GenAI builder int4 (its RTN)"] = genai.onnx_logits(built, args.threads)
    for bits in (8, 4):
        name = f"optimum-intel/NNCF int{bits} on OpenVINO GenAI"
        try:
            generators[name], logits[name] = _openvino(folder, bits, args.work, args.threads)
        except ImportError as missing:
            left_out[name] = f"not installed ({missing.name})"
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").eval()
        quantize_(model, Int8WeightOnlyConfig())
        generators["torchao int8 weight-only (PyTorch eager)"] = TorchGenerator(model)
        logits["torchao int8 weight-only (PyTorch eager)"] = torch_logits(model)
    except ImportError as missing:
        left_out["torchao int8 weight-only"] = f"not installed ({missing.name})"
    quality = {name: perplexity(run, corpus.evaluation, 256, 128, 8) for name, run in logits.items()}
    meter, reason = select_meter(EnergySpec())
    shape = GenerationShape(1, 128, 64)
    results = benchmark_generation(generators, lambda n: corpus.prompt(5000 + n, 128), shape, meter, args.rounds)
    info = cpu_info()
    print(
        f"SmolLM2-135M ({folder}); batch 1, prompt 128, 64 new tokens, {args.rounds} rounds, {args.threads} threads; "
        f"CPU {info.model} (flags: {', '.join(info.flags)}); energy: {meter.method} ({reason}); torch "
        f"{torch.__version__}"
    )
    print(
        "\n| artifact | perplexity | vs FP32 | TTFT ms | TPOT ms p50 | J/generated token "
        f"({meter.method}) | TPOT vs greencompress |"
    )
    print("|---|---|---|---|---|---|---|")
    base = quality["PyTorch FP32 eager"].perplexity
    ours_name = f"greencompress: {chosen}"
    for name, result in results.items():
        ratio = paired(result.time_per_output_token_ms, results[ours_name].time_per_output_token_ms)
        versus = "" if name == ours_name or ratio is None else f"{ratio.ratio:.2f}x [{ratio.low:.2f}, {ratio.high:.2f}]"
        print(
            f"| {name} | {quality[name].perplexity:.2f} | {quality[name].perplexity / base - 1:+.1%} | "
            f"{np.median(result.time_to_first_token_ms):.1f} | {result.percentile_step_ms(50):.2f} | "
            f"{np.median(result.joules_per_generated_token):.4f} | {versus} |"
        )
    for name, why in left_out.items():
        print(f"| {name} | {why} | | | | | |")
    return 0


def _openvino(folder: Path, bits: int, work: Path, threads: int):
    import openvino_genai
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig

    target = work / f"openvino-int{bits}"
    if not (target / "openvino_model.xml").is_file():
        config = OVWeightQuantizationConfig(bits=bits, sym=True, group_size=64 if bits == 4 else None, ratio=1.0)
        model = OVModelForCausalLM.from_pretrained(folder, export=True, quantization_config=config)
        model.save_pretrained(target)
        import openvino as ov
        from openvino_tokenizers import convert_tokenizer
        from transformers import AutoTokenizer

        tokenizer, detokenizer = convert_tokenizer(AutoTokenizer.from_pretrained(folder), with_detokenizer=True)
        ov.save_model(tokenizer, target / "openvino_tokenizer.xml")
        ov.save_model(detokenizer, target / "openvino_detokenizer.xml")
    pipeline = openvino_genai.LLMPipeline(str(target), "CPU", INFERENCE_NUM_THREADS=threads, CACHE_DIR="")
    model = OVModelForCausalLM.from_pretrained(target, ov_config={"INFERENCE_NUM_THREADS": threads})
    return StreamingGenerator(pipeline, 64), torch_logits(model)


if __name__ == "__main__":
    sys.exit(main())
