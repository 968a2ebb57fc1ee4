#!/usr/bin/env bash
# Installs (if missing) and starts the real services the tests use, on loopback only:
# Redis and PostgreSQL (and installs Chromium for the browser test). Source it: it exports SWITCHBOARD_TEST_REDIS_URL and
# SWITCHBOARD_TEST_DATABASE_URL and registers a trap that stops both on exit.

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  --daemonize yes --pidfile "$svc_dir/redis.pid" --logfile "$svc_dir/redis.log" --dir "$svc_dir"
export SWITCHBOARD_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"

pg_port=$(free_port)
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
  run_pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast stop >/dev/null 2>&1
  rm -rf "$svc_dir"
}
trap stop_services EXIT
echo "services: redis on $redis_port, postgres on $pg_port"
