#!/usr/bin/env bash
# Installs the system packages the build and tests need on Debian 12, skipping
# whatever is already present (idempotent; does nothing when all is installed).
# Meant for root on a fresh machine (uses sudo when not root and sudo exists).
set -euo pipefail

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system: apt-get not found (not Debian?); install Ruby 3.1 + grpc/protobuf gems," \
       "grpc_tools_ruby_protoc and PostgreSQL yourself." >&2
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n env DEBIAN_FRONTEND=noninteractive); fi
fi

is_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

# Ruby SDK: runtime, stubs generator (grpc_tools_ruby_protoc) and the well-known
# .proto files it compiles against (libprotobuf-dev, /usr/include/google/protobuf).
wanted=(ruby ruby-grpc ruby-grpc-tools ruby-google-protobuf ruby-railties ruby-activesupport ruby-activejob libprotobuf-dev)
# The Ruby SDK's queue-system test runs a real Sidekiq (Debian's gem) on a real Redis.
wanted+=(ruby-sidekiq redis-server)
# The TLS tests make a throwaway certificate with the openssl CLI.
wanted+=(openssl)

# PostgreSQL only when no initdb is around (PATH or Debian's versioned bin dirs).
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  wanted+=(postgresql)
fi
# python3 -m venv needs ensurepip (Debian splits it into python3-venv).
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then wanted+=(python3-venv); fi
if ! command -v npm >/dev/null 2>&1; then wanted+=(nodejs npm); fi

missing=()
for pkg in "${wanted[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-system: all system packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
  echo "install-system: missing packages (${missing[*]}) and not root; install them as root." >&2
  exit 1
fi

echo "install-system: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -q

# Drop packages this distribution does not offer.
available=()
for pkg in "${missing[@]}"; do
  candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
    available+=("$pkg")
  else
    echo "install-system: package $pkg is not available here; skipping it" >&2
  fi
done
if [ "${#available[@]}" -gt 0 ]; then
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${available[@]}" </dev/null
fi
