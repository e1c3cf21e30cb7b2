#!/usr/bin/env bash
# Fails when the committed generated code differs from what `make gen` produces.
# Run after scripts/gen.sh (the Makefile's check-gen target does both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dirs=(sdk-python/src/tasker/v1 sdk-node/src/generated sdk-ruby/lib/tasker/v1)
status=0
if ! git diff --exit-code --stat -- "${dirs[@]}"; then
  status=1
fi
untracked=$(git ls-files --others --exclude-standard -- "${dirs[@]}")
if [ -n "$untracked" ]; then
  echo "Untracked generated files:"
  echo "$untracked" | sed 's/^/  /'
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo >&2
  echo "check-gen: FAILED: the committed generated code is stale (it does not match proto/)." >&2
  echo "check-gen: run 'make gen' and commit ${dirs[*]}." >&2
  exit 1
fi
echo "check-gen: generated code is up to date"
