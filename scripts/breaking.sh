#!/usr/bin/env bash
# buf breaking against the main branch, only when main exists and has proto/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUF=${BUF:-tools/node_modules/.bin/buf}

if git rev-parse --verify -q refs/heads/main >/dev/null && git cat-file -e main:proto 2>/dev/null; then
  echo "breaking: buf breaking --against '.git#branch=main'"
  "$BUF" breaking --against '.git#branch=main'
  echo "breaking: no breaking changes against main"
else
  echo "breaking: SKIPPED (no main branch with proto/ to compare against yet)"
fi
