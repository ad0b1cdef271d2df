#!/usr/bin/env bash
# Set up and run the tests on a fresh machine (the README's test command; CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
python -m pip install -q -r requirements.txt
python -m pip install -q -e . --no-deps
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
python -m pytest -q -rs "$@"
