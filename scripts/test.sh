#!/usr/bin/env bash
# The whole test suite: set up (with Chromium for the browser test), lint, the import contracts, then pytest (engine,
# local sandbox, real kernels, Daytona SDK over loopback, nbval over notebooks/, the browser),
# and the JupyterLab extension's own lint and unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
bash .ci/install-sandbox-packages.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The layers and what may import what (pyproject.toml [tool.importlinter]).
.venv/bin/lint-imports
if [ -f labextension/package.json ]; then
  [ -d labextension/node_modules ] || (cd labextension && npm ci --no-audit --no-fund)
  (cd labextension && npm run --silent lint:check && npm test --silent)
fi
.venv/bin/python -m pytest "$@"
