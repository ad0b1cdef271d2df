#!/usr/bin/env bash
# Runs for a GPU machine. `bench` gave the H200 figures in README.md. `ablations` and `models` run the
# experiments of docs/RESULTS.md at full FER+ scale; they were started on a lent H200 once but not
# finished (its container showed 2 CPU cores), so no figure in the docs comes from them yet.
# Needs FER+ and CK+ under $KEFER_DATA and the converted encoders in the kefer cache.
#   bash scripts/gpu_runs.sh bench                    # training/inference images/s per encoder and size
#   bash scripts/gpu_runs.sh ablations [runner flags] # table2, contrast, text, templates: 3 seeds each
#   bash scripts/gpu_runs.sh models [runner flags]    # encoder initialisations, FaceNet baseline vs full, the shipped models
# Runner flags go to `python -m kefer.experiments run`, e.g. --root DIR, --deadline MIN, -- --time-budget 6
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?bench, ablations or models}
shift
case "$what" in
  bench)
    for args in "--preset cpu" "--preset paper-r18" "--preset paper-swin" \
                "--preset paper-r18 --encoder inception-resnet-v1 --img-size 112"; do
      python benchmarks/bench_train.py $args --steps 15 --device cuda || echo "bench failed: $args"
    done ;;
  ablations)
    python -m kefer.experiments run table2 contrast text templates --seeds 0 1 2 --parallel 3 --workers 2 --device cuda "$@" ;;
  models)
    python -m kefer.experiments run encoders table2-facenet models --seeds 0 1 2 --parallel 4 --workers 2 --device cuda "$@" ;;
  *) echo "unknown: $what" >&2; exit 2 ;;
esac
