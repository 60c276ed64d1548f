#!/bin/bash
# Segment every tomogram of a project on N nodes x G GPUs with SLURM.
# Each array task runs one pom-infer worker per GPU of its node; the claim files in
# output/.pom/ share the tomograms out, so tasks need no list of their own and a task
# that dies (or is pre-empted) has its tomogram taken over after the lease.
#
#   sbatch --array=1-8 examples/slurm_array.sh /path/to/project
#
#SBATCH --job-name=pom-process
#SBATCH --nodes=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --output=pom-process-%A_%a.log
set -euo pipefail
PROJECT=${1:?usage: sbatch --array=1-N slurm_array.sh PROJECT_DIR}
cd "$PROJECT"
# SLURM exposes the node's allocated GPUs as 0..G-1 in CUDA_VISIBLE_DEVICES order.
NGPU=$(nvidia-smi -L | wc -l)
GPUS=$(seq -s, 0 $((NGPU - 1)))
exec pom-infer process models/phase2/shared.onnx \
    --tomograms tomograms --macromolecules macromolecules --output output \
    --gpus "$GPUS" --lease-seconds 300
