#!/bin/bash
# Run a normwd sweep as a Slurm job array: each array task trains its own interleaved slice
# of the grid into the shared folder; a last job merges the results and writes the report.
#
#   sbatch --array=0-7 examples/slurm-array.sh          # 8 shards
#   sbatch --dependency=afterok:<jobid> --wrap "normwd sweep --merge $OUT"
#
# Tasks never train the same point twice (per-point lock files), and a task that is killed
# and requeued resumes its points from their last checkpoints.
#SBATCH --job-name=normwd-sweep
#SBATCH --cpus-per-task=4
#SBATCH --time=02:00:00
#SBATCH --requeue
#SBATCH --output=normwd-sweep-%A_%a.log
set -euo pipefail
CONFIG=${CONFIG:-examples/lr-wd-grid.toml}
OUT=${OUT:-$HOME/normwd-sweeps/lr-wd-grid}      # a folder every node sees
N=${SLURM_ARRAY_TASK_COUNT:?run with sbatch --array}
I=${SLURM_ARRAY_TASK_ID:?run with sbatch --array}
# Tasks are numbered from SLURM_ARRAY_TASK_MIN; shards from 0.
I=$((I - ${SLURM_ARRAY_TASK_MIN:-0}))
exec normwd sweep --config "$CONFIG" --out "$OUT" --shard "$I/$N" --jobs 1
