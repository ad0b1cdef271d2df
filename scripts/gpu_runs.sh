#!/usr/bin/env bash
# Runs for a GPU machine. `bench` gave the H200 figures in README.md. `ablations` and `models` run the
# experiments of docs/RESULTS.md at full FER+ scale; they were started on a lent H200 once but not
# finished (its container showed 2 CPU cores), so no figure in the docs comes from them yet.
# Needs FER+ and CK+ under $KEFER_DATA and the converted encoders in the kefer cache: on a lent
# machine, stage them with scripts/device_pack.sh here, then `setup` there (once per carry).
#   bash scripts/gpu_runs.sh setup                    # unpack .dev/a or .dev/b into /tmp/kefer; prints the env to use
#   bash scripts/gpu_runs.sh accurate [train flags]   # the accurate model's recipe for all its 20 epochs
#   bash scripts/gpu_runs.sh bench                    # training/inference images/s per encoder and size
#   bash scripts/gpu_runs.sh ablations [runner flags] # table2, contrast, text, templates: 3 seeds each
#   bash scripts/gpu_runs.sh models [runner flags]    # encoder initialisations, FaceNet baseline vs full, the shipped models
# Runner flags go to `python -m kefer lab experiments run`, e.g. --root DIR, --deadline MIN, -- --time-budget 6
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?setup, accurate, bench, ablations or models}
shift
case "$what" in
  setup)
    mkdir -p /tmp/kefer/cache
    if [ -f .dev/a/data.tar.gz ]; then
      tar xzf .dev/a/data.tar.gz -C /tmp/kefer
      cp -r .dev/a/text /tmp/kefer/cache/
      pip install -q --no-deps --target /tmp/kefer/site .dev/a/facenet_pytorch-*.whl
    fi
    if [ -d .dev/b ]; then cp .dev/b/*.safetensors /tmp/kefer/cache/; fi
    ls /tmp/kefer /tmp/kefer/cache
    echo "export KEFER_DATA=/tmp/kefer KEFER_CACHE=/tmp/kefer/cache PYTHONPATH=/tmp/kefer/site" ;;
  accurate)
    python train.py --preset paper-r18 --img-size 112 --text-encoder minilm --encoder facenet-casia --epochs 20 \
      --seed 0 --device cuda --workers "$(nproc)" --output runs/accurate --no-plots "$@"
    python -m kefer evaluate --checkpoint runs/accurate --dataset ckplus \
      --classes neutral,happiness,surprise,sadness,anger,disgust,fear --device cuda --output runs/accurate/ckplus.json ;;
  bench)
    for args in "--preset cpu" "--preset paper-r18" "--preset paper-swin" \
                "--preset paper-r18 --encoder inception-resnet-v1 --img-size 112"; do
      python benchmarks/bench_train.py $args --steps 15 --device cuda || echo "bench failed: $args"
    done ;;
  ablations)
    python -m kefer lab experiments run table2 contrast text templates --seeds 0 1 2 --parallel 3 --workers 2 --device cuda "$@" ;;
  models)
    python -m kefer lab experiments run encoders table2-facenet models --seeds 0 1 2 --parallel 4 --workers 2 --device cuda "$@" ;;
  *) echo "unknown: $what" >&2; exit 2 ;;
esac
