#!/bin/bash
# Train a project's networks on SLURM: `pom single train -o FEATURE` as one array task per feature
# (the configuration's ontologies, in order), then `pom shared initialize` and `pom shared train`
# as one job that starts once every feature has trained. After `pom single initialize` (once, in
# the project), on the login node:
#
#   POM_VENV=~/pom-train bash slurm_train.sh /path/to/project --gres=gpu:1 --cpus-per-task=8 --time=12:00:00
#
# submits both (the sbatch options given apply to each) and prints the job ids; logs go to
# PROJECT/slurm/logs/, appended to when a task is requeued. With label_method "direct" the shared
# network needs no single networks: only the shared job is submitted. Each task trains on the GPUs
# SLURM gave it (on the CPU if none; POM_GPUS=cpu to insist). A feature that fails or is cancelled
# stops the shared job (dependency afterok; resubmit). A requeued task trains its network again.
#
#   POM_VENV   the environment pom-onnx[train] is installed in (required: nothing comes from PATH)
#   POM_SEED   the -seed of every network (default 0)
set -euo pipefail

allocated_gpus() {  # as in slurm_array.sh: the task's GPUs, numbered as CUDA numbers them; never nvidia-smi
    if [[ -z ${SLURM_JOB_GPUS:-} && ${SLURM_GPUS_ON_NODE:-0} == 0 ]]; then
        echo cpu
    elif [[ -n ${CUDA_VISIBLE_DEVICES:-} && $CUDA_VISIBLE_DEVICES != NoDevFiles ]]; then
        seq -s, 0 $(($(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .) - 1))
    elif [[ -n ${SLURM_JOB_GPUS:-} ]]; then
        echo "$SLURM_JOB_GPUS"
    else
        seq -s, 0 $((SLURM_GPUS_ON_NODE - 1))
    fi
}

configuration() {  # label_method, then the ontologies one per line: project_configuration.json, checked as pom does
    "$POM_VENV/bin/python" - <<'PY'
import sys
from pom_common.config import load_config
from pom_common.errors import PomError
try:
    config = load_config("project_configuration.json")
except PomError as exc:
    sys.exit(f"pom-train: error: {exc}")
print("\n".join([config.label_method, *config.ontologies]))
PY
}

if [[ -z ${POM_VENV:-} || ! -x ${POM_VENV:-}/bin/pom ]]; then
    echo "pom-train: error: POM_VENV=${POM_VENV:-} has no bin/pom: name the environment pom-onnx[train] is installed in" >&2
    exit 2
fi
SEED=${POM_SEED:-0}

if [[ -n ${POM_STEP:-} ]]; then  # inside a job (in the project folder): one step
    GPUS=${POM_GPUS:-$(allocated_gpus)}
    export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}
    echo "pom-train[$POM_STEP ${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-}}_${SLURM_ARRAY_TASK_ID:-}] $(date '+%F %T')" \
         "on $(hostname), restart ${SLURM_RESTART_COUNT:-0}: GPUs $GPUS"
    if [[ $POM_STEP == single ]]; then
        mapfile -t SETTINGS < <(configuration)
        FEATURE=${SETTINGS[$((SLURM_ARRAY_TASK_ID + 1))]:?"pom-train: error: no feature $SLURM_ARRAY_TASK_ID in ontologies"}
        exec "$POM_VENV/bin/pom" single train -o "$FEATURE" -gpus "$GPUS" -seed "$SEED"
    fi
    "$POM_VENV/bin/pom" shared initialize
    exec "$POM_VENV/bin/pom" shared train -gpus "$GPUS" -seed "$SEED"
fi

# On the login node: submit.
PROJECT=$(cd "${1:?usage: POM_VENV=... bash slurm_train.sh PROJECT [sbatch options]}" && pwd)
shift
SCRIPT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
cd "$PROJECT"
mapfile -t SETTINGS < <(configuration)
if [[ ${#SETTINGS[@]} -eq 0 ]]; then exit 2; fi  # (the configuration's error was said)
if [[ ! -f training_datasets/phase1/info.json ]]; then
    echo "pom-train: error: $PROJECT has no training data yet: run 'pom single initialize' there first" >&2
    exit 2
fi
mkdir -p slurm/logs
COMMON=(--parsable --chdir="$PROJECT" --open-mode=append --requeue)
EXPORT="ALL,POM_VENV=$POM_VENV,POM_SEED=$SEED"
FEATURES=$((${#SETTINGS[@]} - 1))
DEPENDENCY=()
if [[ ${SETTINGS[0]} != direct && $FEATURES -gt 0 ]]; then
    SINGLE=$(sbatch "${COMMON[@]}" --job-name=pom-single-train --array=0-$((FEATURES - 1)) \
             --output=slurm/logs/%x-%A_%a.log --export="$EXPORT,POM_STEP=single" ${1+"$@"} "$SCRIPT")
    SINGLE=${SINGLE%%;*}
    echo "submitted job $SINGLE: pom single train, one array task per feature ($FEATURES)"
    DEPENDENCY=(--dependency=afterok:"$SINGLE")
fi
SHARED=$(sbatch "${COMMON[@]}" --job-name=pom-shared-train --output=slurm/logs/%x-%j.log \
         --export="$EXPORT,POM_STEP=shared" ${DEPENDENCY[@]+"${DEPENDENCY[@]}"} ${1+"$@"} "$SCRIPT")
SHARED=${SHARED%%;*}
echo "submitted job $SHARED: pom shared initialize, then pom shared train${DEPENDENCY[*]:+, once every feature has trained}"
