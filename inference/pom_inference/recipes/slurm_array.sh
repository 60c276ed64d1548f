#!/bin/bash
# Segment every tomogram of a project with a SLURM job array. Each array task runs pom-infer on
# what SLURM gave it: one worker per allocated GPU, or on its CPUs when it got none. The claim
# files in OUTPUT/.pom/ share the tomograms out, so tasks need no list of their own, and a task
# that is cancelled, pre-empted or killed leaves its tomograms to the others (README, "Clusters").
#
#   cd /path/to/project
#   POM_VENV=~/pom-infer sbatch --array=1-8 --gres=gpu:4 --cpus-per-task=8 --time=24:00:00 slurm_array.sh
#   POM_VENV=~/pom-infer sbatch --array=1-8 --cpus-per-task=8 --time=24:00:00 slurm_array.sh   # CPU nodes
#
# (`pom-infer slurm PROJECT --tasks 8 ...` writes this script with everything filled in.)
# Resources are sbatch options: on the command line as above, or as more #SBATCH lines below.
# Settings are variables, passed from the submitting shell (sbatch exports its environment):
#
#   POM_VENV            the environment pom-onnx is installed in (required: nothing comes from PATH)
#   POM_MODEL           the .onnx model (default: models/phase2/shared.onnx)
#   POM_TOMOGRAMS       folder of tomograms, or a .txt list (default: tomograms)
#   POM_MACROMOLECULES  folder of the other input channels (default: macromolecules, where it exists)
#   POM_OUTPUT          output folder (default: output)
#   POM_GPUS            'cpu': stay on the CPU although GPUs were allocated (default: the task's GPUs)
#   POM_WORKERS         worker processes per GPU, or on the CPU (default: 1)
#   POM_LEASE_SECONDS   a claim not refreshed this long is taken over (default: pom-infer's, 120)
#
# Arguments: the project folder (default: the folder the job was submitted from; relative paths
# are relative to it), then more options of pom-infer process, e.g.
#   sbatch --array=1-8 --gres=gpu:1 slurm_array.sh /path/to/project --dtype uint8 --tta 8
# The log of a requeued task is appended to, not replaced.
#SBATCH --job-name=pom-process
#SBATCH --output=pom-process-%A_%a.log
#SBATCH --open-mode=append
#SBATCH --requeue
set -euo pipefail
if [[ $# -gt 0 ]]; then cd "$1"; shift; fi

# The GPUs SLURM allocated to this task, numbered as CUDA numbers them (from 0). Never from
# nvidia-smi: it lists every GPU of the node, other jobs' too, where devices are not confined.
allocated_gpus() {
    if [[ -z ${SLURM_JOB_GPUS:-} && ${SLURM_GPUS_ON_NODE:-0} == 0 ]]; then
        echo cpu                                     # no GPU allocated: work on the task's CPUs
    elif [[ -n ${CUDA_VISIBLE_DEVICES:-} && $CUDA_VISIBLE_DEVICES != NoDevFiles ]]; then
        seq -s, 0 $(($(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .) - 1))  # CUDA sees these, as 0..n-1
    elif [[ -n ${SLURM_JOB_GPUS:-} ]]; then
        echo "$SLURM_JOB_GPUS"                       # CUDA sees the whole node: the allocated ones by index
    else
        seq -s, 0 $((SLURM_GPUS_ON_NODE - 1))
    fi
}

PREFIX="pom-process[${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-}}_${SLURM_ARRAY_TASK_ID:-}]"
if [[ -z ${POM_VENV:-} || ! -x ${POM_VENV:-}/bin/pom-infer ]]; then
    echo "$PREFIX: error: POM_VENV=${POM_VENV:-} has no bin/pom-infer: name the environment pom-onnx is installed in" >&2
    exit 2
fi
GPUS=${POM_GPUS:-$(allocated_gpus)}
WORKERS=${POM_WORKERS:-1}
if [[ $GPUS == cpu ]]; then PROCESSES=$WORKERS; else PROCESSES=$(($(tr ',' '\n' <<<"$GPUS" | grep -c .) * WORKERS)); fi
CPUS=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-$(nproc)}}
THREADS=$((CPUS / PROCESSES > 0 ? CPUS / PROCESSES : 1))    # the task's CPUs shared by its workers
export OMP_NUM_THREADS=$THREADS NUMBA_NUM_THREADS=$THREADS

MACROMOLECULES=${POM_MACROMOLECULES-macromolecules}
ARGS=(process "${POM_MODEL:-models/phase2/shared.onnx}" --tomograms "${POM_TOMOGRAMS:-tomograms}"
      --output "${POM_OUTPUT:-output}" --gpus "$GPUS" --workers "$WORKERS")
if [[ -n $MACROMOLECULES && ( -n ${POM_MACROMOLECULES:-} || -d $MACROMOLECULES ) ]]; then
    ARGS+=(--macromolecules "$MACROMOLECULES")
fi
if [[ -n ${POM_LEASE_SECONDS:-} ]]; then ARGS+=(--lease-seconds "$POM_LEASE_SECONDS"); fi
ARGS+=(${1+"$@"})

if [[ $GPUS == cpu ]]; then WHERE="the CPU"; else WHERE="GPU $GPUS"; fi
echo "$PREFIX $(date '+%F %T') on $(hostname), restart ${SLURM_RESTART_COUNT:-0}: $WHERE," \
     "$WORKERS worker(s) per device, $THREADS thread(s) per worker"
echo "$PREFIX $POM_VENV/bin/pom-infer ${ARGS[*]}"
exec "$POM_VENV/bin/pom-infer" "${ARGS[@]}"
