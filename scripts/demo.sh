#!/usr/bin/env bash
# The main job: set up, then run notebooks/quickstart.ipynb headless on the local sandbox and
# print what each cell produced.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/codemode-jupyter run notebooks/quickstart.ipynb "$@"
