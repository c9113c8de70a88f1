#!/usr/bin/env bash
# Every table and figure of the paper, from one command (the grid lives in experiments/grid.py, its report in experiments/report.py):
#   bash run_all.sh --profile paper --data_root /data [--nproc 4] [--dry_run]
#   bash run_all.sh --profile quick --data_path data/cifar10-mini --output_dir R   # ~20 min on 2 CPU cores
# Re-running the same command skips what finished and resumes what was interrupted.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
if [[ " $* " != *" --dry_run "* ]] && ! "$PYTHON" -c "import torch, torchvision" 2>/dev/null; then
  echo "run_all.sh: '$PYTHON' cannot import torch and torchvision; activate the environment of the README's Set-up (or set PYTHON)." >&2
  exit 2
fi
exec "$PYTHON" -m experiments.grid "$@"
