#!/usr/bin/env bash
# Everything the project needs on a fresh machine (Python 3.10+, Node 20, git): a virtualenv in
# .venv with the package (its JupyterLab extension built by pip) and the test tools.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh [--browser]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.codemode-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ labextension/package.json -nt "$stamp" ] \
   || [ -n "$(find labextension/src labextension/style labextension/schema -newer "$stamp" -print -quit 2>/dev/null)" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi
if [ "${1:-}" = "--browser" ]; then
  bash .ci/install-browser.sh
fi
