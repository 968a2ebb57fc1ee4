#!/usr/bin/env bash
# Installs (if missing) and starts the real services the tests use, on loopback only:
# Redis, a Redis Cluster of 3 primaries and PostgreSQL (and installs Chromium for the browser test,
# and redis-sentinel for the Sentinel tests, which start their own). Source it: it exports
# SWITCHBOARD_TEST_REDIS_URL, SWITCHBOARD_TEST_REDIS_CLUSTER_URL and SWITCHBOARD_TEST_DATABASE_URL
# and registers a trap that stops them all on exit.

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)
# Headless Chromium for the browser test of pusher-js's HTTP transports (e2e/browser.test.mjs).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pg_bin" ] && [ -x "$pg_bin/postgres" ] || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "services: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

svc_dir=$(mktemp -d /tmp/switchboard-services.XXXXXX)
chmod 755 "$svc_dir"
# Every port at once, so no two are alike, and from below the ephemeral range (free-ports.py says why).
mapfile -t svc_ports < <(python3 "$(dirname "${BASH_SOURCE[0]}")/free-ports.py" 8)
[ ${#svc_ports[@]} -eq 8 ] || { echo "services: no free loopback ports" >&2; false; }
redis_port=${svc_ports[0]}
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  --daemonize yes --pidfile "$svc_dir/redis.pid" --logfile "$svc_dir/redis.log" --dir "$svc_dir"
export SWITCHBOARD_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"

# Retries a command (quietly) every 0.1 s for up to 30 s; says what was not reached if it never succeeds.
retry_30s() {
  local what=$1; shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "services: $what not reached within 30 s (logs in $svc_dir)" >&2
  return 1
}
# A Redis Cluster of 3 primaries, no replicas (issue 19). Each node's cluster bus port is set
# (--cluster-port), not the default port + 10000, which may lie past 65535.
cluster_ports=()
for i in 1 2 3; do
  cluster_port=${svc_ports[$((2 * i - 1))]}
  redis-server --cluster-enabled yes --cluster-config-file "$svc_dir/nodes-$cluster_port.conf" \
    --cluster-node-timeout 1000 --cluster-port "${svc_ports[$((2 * i))]}" \
    --bind 127.0.0.1 --port "$cluster_port" --save '' --appendonly no \
    --daemonize yes --pidfile "$svc_dir/redis-cluster-$cluster_port.pid" \
    --logfile "$svc_dir/redis-cluster-$cluster_port.log" --dir "$svc_dir"
  cluster_ports+=("$cluster_port")
done
cluster_ok() {
  local p info
  for p in "${cluster_ports[@]}"; do
    info=$(redis-cli -p "$p" cluster info) || return 1
    grep -q '^cluster_state:ok' <<<"$info" && grep -q '^cluster_slots_ok:16384' <<<"$info" || return 1
  done
}
for cluster_port in "${cluster_ports[@]}"; do
  retry_30s "redis cluster node $cluster_port" redis-cli -p "$cluster_port" ping
done
redis-cli --cluster create "${cluster_ports[@]/#/127.0.0.1:}" --cluster-yes \
  >"$svc_dir/redis-cluster-create.log" 2>&1 || { cat "$svc_dir/redis-cluster-create.log" >&2; false; }
retry_30s "redis cluster_state:ok on every node" cluster_ok
export SWITCHBOARD_TEST_REDIS_CLUSTER_URL="redis://127.0.0.1:${cluster_ports[0]}"

pg_port=${svc_ports[7]}
pg_data="$svc_dir/pg"
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  mkdir -p "$pg_data" && chown postgres "$pg_data"
fi
run_pg "$pg_bin/initdb" -D "$pg_data" -U postgres -A trust >/dev/null
run_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_data -c max_connections=200" start >/dev/null
export SWITCHBOARD_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"

stop_services() {
  [ -f "$svc_dir/redis.pid" ] && kill "$(cat "$svc_dir/redis.pid")" 2>/dev/null
  local pidfile
  for pidfile in "$svc_dir"/redis-cluster-*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
  done
  run_pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast stop >/dev/null 2>&1
  rm -rf "$svc_dir"
}
trap stop_services EXIT
echo "services: redis on $redis_port, redis cluster on ${cluster_ports[*]}, postgres on $pg_port"
