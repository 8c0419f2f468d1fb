#!/usr/bin/env bash
# The Daytona tests against given versions of the daytona SDK: the evidence for the range in
# pyproject.toml's daytona extra (run it after changing the backend or the range). Each version
# gets a throwaway virtualenv holding .venv's packages with that SDK swapped in; the checkout's
# code is used through PYTHONPATH. Defaults: the oldest and the newest version of the range.
# Usage: bash scripts/check-daytona-versions.sh [VERSION ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(0.180.0 0.226.1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1

.venv/bin/python -m pip freeze --exclude-editable | grep -vi '^daytona' >"$work/base.txt"
"${PYTHON:-python3}" -m venv "$work/base"
"$work/base/bin/python" -m pip install --quiet -r "$work/base.txt"
failed=()
for version in "${versions[@]}"; do
  venv="$work/daytona-$version"
  cp -a "$work/base" "$venv"
  "$venv/bin/python" -m pip install --quiet "daytona==$version"
  echo "=== daytona $version"
  if ! PYTHONPATH="$PWD" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
      tests/test_daytona.py tests/test_daytona_logs.py tests/test_daytona_sandboxes.py \
      tests/test_daytona_magic.py tests/test_kernel_daytona.py; then
    failed+=("$version")
  fi
  rm -rf "$venv"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "the Daytona tests FAILED with daytona ${failed[*]}" >&2
  exit 1
fi
echo "the Daytona tests pass with daytona ${versions[*]}"
