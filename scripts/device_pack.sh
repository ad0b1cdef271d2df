#!/usr/bin/env bash
# Stages what a lent GPU machine (the `device` tool) needs, in two carries that each fit its 64 MiB
# limit with the working tree, under .dev/ (keep it out of git: `echo /.dev/ >> .git/info/exclude`):
#   bash scripts/device_pack.sh pack    # .dev/a: FER+ (majority-protocol images, label.csv) + CK+ as one
#                                       #   tar.gz, the text-embedding cache, the facenet-pytorch wheel (~56 MB)
#                                       # .dev/b: the converted pretrained encoders in fp16 (~52 MB)
#   bash scripts/device_pack.sh aside   # moves assets/*.safetensors (~70 MB) into .dev/assets for the calls
#   bash scripts/device_pack.sh back    # and back
# On the GPU machine, `bash scripts/gpu_runs.sh setup` (carrying .dev/a), then a second call carrying
# .dev/b, unpacks them into /tmp/kefer (see gpu_runs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:?pack, aside or back}" in
  pack)
    mkdir -p .dev/a .dev/b
    python - <<'EOF'
import tarfile
from pathlib import Path
from kefer.train.data import default_root
from kefer.train.data.ferplus import SPLIT_DIRS, read_split

fer, ck = default_root("ferplus"), default_root("ckplus")
with tarfile.open(".dev/a/data.tar.gz", "w:gz") as tar:
    for split, folder in SPLIT_DIRS.items():
        tar.add(fer / folder / "label.csv", f"ferplus/{folder}/label.csv")
        for path, _ in read_split(fer, split):
            tar.add(path, f"ferplus/{folder}/{path.name}")
    tar.add(ck, "ckplus")
EOF
    cache=${KEFER_CACHE:-$HOME/.cache/kefer}
    rm -rf .dev/a/text && cp -r "$cache/text" .dev/a/text
    pip download -q --no-deps facenet-pytorch==2.5.3 -d .dev/a
    python - "$cache" <<'EOF'
import sys
from pathlib import Path
from safetensors.torch import load_file, save_file

for f in Path(sys.argv[1]).glob("*.safetensors"):  # the converted encoders: fp16 halves them
    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(f).items()}, f".dev/b/{f.name}")
EOF
    du -sh .dev/a .dev/b ;;
  aside) mkdir -p .dev/assets && mv assets/*.safetensors .dev/assets/ ;;
  back) mv .dev/assets/*.safetensors assets/ ;;
  *) echo "unknown: $1" >&2; exit 2 ;;
esac
