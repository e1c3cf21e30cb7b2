#!/usr/bin/env bash
# Regenerates ALL code generated from proto/ (Python, Node/TypeScript, Ruby).
# Output is deterministic: running it twice leaves the tree unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LC_ALL=C

PYTHON=${PYTHON:-.venv/bin/python}
BUF=${BUF:-tools/node_modules/.bin/buf}
PROTOS=(proto/tasker/v1/*.proto)   # glob expansion is sorted (LC_ALL=C)

need() { [ -e "$1" ] || command -v "$1" >/dev/null 2>&1 || { echo "gen: $1 not found; $2" >&2; exit 1; }; }
need "$PYTHON" "run 'make install'"
need "$BUF" "run 'make install'"
need sdk-node/node_modules/.bin/protoc-gen-ts_proto "run 'make install'"
need grpc_tools_ruby_protoc "run 'make install-system' (Debian package ruby-grpc-tools)"

# --- Python: sdk-python/src/tasker/v1 (package tasker.v1; imports `from tasker.v1 import x_pb2`)
py_out=sdk-python/src
mkdir -p "$py_out/tasker/v1"
find "$py_out/tasker/v1" -maxdepth 1 -type f \( -name '*_pb2*.py' -o -name '*_pb2*.pyi' \) -delete
[ -e "$py_out/tasker/__init__.py" ] || : > "$py_out/tasker/__init__.py"
[ -e "$py_out/tasker/py.typed" ] || : > "$py_out/tasker/py.typed"
: > "$py_out/tasker/v1/__init__.py"
"$PYTHON" -m grpc_tools.protoc -I proto \
  --python_out="$py_out" --pyi_out="$py_out" --grpc_python_out="$py_out" "${PROTOS[@]}"

# --- Node: sdk-node/src/generated (ts-proto as a local buf plugin; buf.gen.yaml has clean: true)
"$BUF" generate --template sdk-node/buf.gen.yaml

# --- Ruby: sdk-ruby/lib/tasker/v1 (Debian's grpc_tools_ruby_protoc; WKTs from libprotobuf-dev)
rb_out=sdk-ruby/lib
rm -rf "$rb_out/tasker/v1"
mkdir -p "$rb_out"
wkt_include=()
[ -f /usr/include/google/protobuf/struct.proto ] && wkt_include=(-I /usr/include)
grpc_tools_ruby_protoc -I proto "${wkt_include[@]}" \
  --ruby_out="$rb_out" --grpc_out="$rb_out" "${PROTOS[@]}"

echo "gen: regenerated sdk-python/src/tasker/v1, sdk-node/src/generated, sdk-ruby/lib/tasker/v1"
