#!/usr/bin/env bash
# A plain install works without the test tools or the Daytona SDK: builds the wheel, installs
# it (dependencies from the package index) into a fresh virtualenv, checks that the daytona SDK
# is absent and that choosing Daytona names the extra, runs notebooks/quickstart.ipynb with the
# CLI, then adds the [daytona] extra and reports what it costs. About a minute with pip's cache
# warm. Usage: bash scripts/check-lean-install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1

"$PYTHON" -m venv "$work/venv"
py="$work/venv/bin/python"
# pip builds the wheel as a user's `pip install .` would (the JupyterLab extension is built
# by npm unless codemode_jupyter/labextension already holds a build).
"$py" -m pip wheel --quiet --no-deps -w "$work/dist" .
"$py" -m pip install --quiet --find-links "$work/dist" codemode-jupyter
size() { du -sm "$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" | cut -f1; }
lean=$(size)

if "$py" -c 'import daytona' 2>/dev/null; then
  echo "FAIL: a plain install pulled in the daytona SDK" >&2
  exit 1
fi
"$py" - <<'PY'
from codemode_jupyter import CodeMode
from codemode_jupyter.backends import BackendNotInstalled

try:
    CodeMode(backend="daytona", api_key="unused").status()
except BackendNotInstalled as exc:
    assert "pip install 'codemode-jupyter[daytona]'" in str(exc), exc
    print(f"choosing Daytona without the SDK: {exc}")
else:
    raise SystemExit("FAIL: the daytona backend started without its SDK")
PY
"$work/venv/bin/codemode-jupyter" --help >/dev/null
# From another directory, so nothing can import the checkout instead of the installed wheel.
(cd "$work" && "$work/venv/bin/codemode-jupyter" run "$repo/notebooks/quickstart.ipynb" \
  >"$work/quickstart.txt") || { cat "$work/quickstart.txt"; echo "FAIL: the CLI" >&2; exit 1; }
echo "codemode-jupyter run notebooks/quickstart.ipynb: ok ($(grep -c '^──── cell' "$work/quickstart.txt") code cells)"

"$py" -m pip install --quiet --find-links "$work/dist" "codemode-jupyter[daytona]"
"$py" -c 'import daytona' || { echo "FAIL: [daytona] did not install the SDK" >&2; exit 1; }
full=$(size)
echo "site-packages: ${lean} MB plain, ${full} MB with [daytona] (+$((full - lean)) MB)"
echo "lean install: ok"
