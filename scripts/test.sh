#!/usr/bin/env bash
# Runs every test on a fresh machine: formatting and lints, the Rust unit and integration
# tests (against real Redis and PostgreSQL started on loopback), and the end-to-end tests
# with the real pusher-js and pusher npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/services.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked
echo "== end-to-end (pusher-js, pusher)"
cargo build --locked
export SWITCHBOARD_BIN="$PWD/target/debug/switchboard"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error && npm test)
echo "== bus client (clients/js) against the server"
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm run build && npm test)
