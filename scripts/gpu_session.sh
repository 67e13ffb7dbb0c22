#!/usr/bin/env bash
# Every GPU check in one call on a lent NVIDIA machine, within 9.5 minutes (a call may run 10; a session
# has 15 minutes of device time, machine start included, so there is no second try to count on):
#   1. the GPU tests (tests/test_gpu.py);
#   2. `greencompress run recipes/resnet_prune_gpu.yaml` at batch 64, 3 windows: a GPU run's report (at most 5.5 min;
#      NVML's counter windows are 10 s, so 6 artifacts x 3 windows take 3 minutes: on 2026-12-04 a 210 s cap with
#      5 windows left no report);
#   3. scripts/gpu_check.py with the time left: NVML counter vs sampled power, window lengths, idle,
#      power limits, then FP32/FP16/BF16/compiled J/inference model by model while the budget lasts.
# At most 8 files come back from $OUT: session.log, pytest_gpu.log, gpu_check.json, gpu_check.md,
# run.log, report.json, report.md.
#
# Here, first:   .venv/bin/python scripts/gpu_wheels.py     (pydantic and torch-pruning, as wheels, in .whl/)
# Then, through the device tool:  command "bash scripts/gpu_session.sh", carry [".whl"], timeout_s 600.
# The check's model part gets what the run leaves (a few model and batch-size pairs, batch 32 first); once
# this has run, a later GPU session can give the check the whole call for every pair:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
#   PYTHONPATH=/tmp/site:$PWD python3 scripts/gpu_check.py --out $OUT --budget-s 540
set -uo pipefail

out=${OUT:-${1:-gpu-session}}
deadline=$(( $(date +%s) + ${GPU_SESSION_SECONDS:-570} ))
mkdir -p "$out"
log() { echo "gpu_session: $*" | tee -a "$out/session.log" >&2; }
left() { echo $(( deadline - $(date +%s) )); }

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { log "the carried wheels did not install"; exit 3; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
log "python $(python3 -c 'import sys; print(sys.version.split()[0])'); $(python3 -c 'import torch, pydantic; print("torch", torch.__version__, "cuda", torch.version.cuda, "pydantic", pydantic.VERSION)' 2>&1 | tail -1)"
nvidia-smi --query-gpu=name,uuid,driver_version,memory.total,power.limit,clocks.max.sm --format=csv >> "$out/session.log" 2>&1

timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$out/pytest_gpu.log" 2>&1
log "pytest tests/test_gpu.py: exit $? ($(tail -1 "$out/pytest_gpu.log"))"

# The run first, at batch 64 only, stopped by SIGINT at 330 s if it must be: an interrupted run still writes
# the report of the batch sizes it finished, marked INCOMPLETE.
timeout -k 15 -s INT 330 python3 -m greencompress run recipes/resnet_prune_gpu.yaml --output /tmp/gpu-runs \
  --set 'benchmark.batch_sizes=[64]' --set benchmark.windows=3 --set benchmark.max_windows=3 \
  --set benchmark.cooldown_s=0.2 \
  > "$out/run.log" 2>&1
log "greencompress run: exit $?; $(left) s left"
report=$(ls -d /tmp/gpu-runs/*/*/ 2>/dev/null | tail -1)
if [ -n "$report" ]; then
  cp "$report/report.json" "$report/report.md" "$out/" 2>/dev/null || log "no report in $report"
fi

# The check keeps to its budget by itself: its fixed parts take about 2 minutes, the models what is left.
timeout -k 10 $(( $(left) - 5 )) python3 scripts/gpu_check.py --out "$out" --budget-s $(( $(left) - 25 )) \
  > /dev/null 2>> "$out/session.log"
log "gpu_check: exit $?; done, $(left) s before the deadline"
