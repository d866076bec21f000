#!/usr/bin/env bash
# The Orpheus GPU check in one go, for a GPU machine without network access:
# random-weight Orpheus 3B and SNAC, batched SNAC vs per-window, LLM tokens/s
# per concurrency level, time to first audio through the engine; JSON + PNG.
#
#   bench/gpu_check.sh [extra bench.orpheus_gpu flags, e.g. --levels 1,8,64 --tokens 128]
#
# Environment: OUT (results directory, default bench/results), WHEELS (a
# directory of wheels to install snac from when it is missing), BUDGET_S
# (hard limit for the whole run, default 470 s; new levels stop at 420 s).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-bench/results}"
BUDGET_S="${BUDGET_S:-470}"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
if ! "$PYTHON" -c "import snac" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet --no-index --find-links "${WHEELS:-wheels}" snac
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "$OUT"
exec timeout "$BUDGET_S" "$PYTHON" -m bench.orpheus_gpu --out "$OUT" --budget-s "$((BUDGET_S - 50))" "$@"
