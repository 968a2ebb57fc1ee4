#!/usr/bin/env bash
# Fault campaign: three Switchboard nodes (release build) sharing one Redis and one
# PostgreSQL, all on 127.0.0.1 and started here; steady publishing through the signed HTTP
# API (events and bus notifications, each with an idempotency key, retried with it) and the
# PostgreSQL outbox; Pusher and bus consumers on every node recording every event id; and
# faults one at a time, repeated: kill -9 of a node (the outbox ingester) and its restart,
# Redis restart, PostgreSQL restart, a consumer's socket cut, a consumer that stops reading.
# Rewrites the generated part of RELIABILITY.md (below its marker line) and appends the raw
# JSON line to bench/<date>-chaos.jsonl.
#
#   scripts/chaos.sh                 # 15 minutes
#   MINUTES=2 scripts/chaos.sh       # a short run
#   CHAOS_ARGS="--down 5 --stall 60" scripts/chaos.sh   # driver options (switchboard-chaos --help)
#
# The driver is `switchboard-chaos` (src/bin/chaos). It calls this script back as
# `scripts/chaos.sh ctl ACTION [NODE]` (kill, start, redis-stop, redis-start, pg-stop,
# pg-start) to act on the processes. Everything started here is stopped on exit; node logs
# stay in $CHAOS_DIR (target/chaos).
set -euo pipefail
cd "$(dirname "$0")/.."

export CHAOS_DIR=${CHAOS_DIR:-$PWD/target/chaos}
export CHAOS_PORT=${CHAOS_PORT:-17101} # nodes: PORT..PORT+2, metrics +100, Redis +50, PostgreSQL +51
REDIS_PORT=$((CHAOS_PORT + 50))
PG_PORT=$((CHAOS_PORT + 51))
DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
gone() { # $1 = pid: not running (or a zombie nobody reaped yet)
  [ ! -e "/proc/$1" ] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}
wait_gone() { for _ in $(seq 1 100); do gone "$1" && return 0; sleep 0.05; done; return 1; }

start_node() { # $1 = 1, 2, 3. Node 1 has no database: the ingester is always node 2 or 3.
  local i=$1 port=$((CHAOS_PORT + $1 - 1)) db=()
  [ "$i" = 1 ] || db=(SWITCHBOARD_DATABASE_URL="$DB_URL")
  env SWITCHBOARD_HOST=127.0.0.1 SWITCHBOARD_PORT="$port" SWITCHBOARD_METRICS_PORT=$((port + 100)) \
    SWITCHBOARD_DATA_DIR="$CHAOS_DIR/node$i" SWITCHBOARD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    SWITCHBOARD_REDIS_PREFIX="$CHAOS_PREFIX" "${db[@]}" \
    SWITCHBOARD_SERVER_MAX_CONNECTIONS_PER_IP=0 \
    RUST_LOG="${RUST_LOG:-warn,switchboard::redis_base=info,switchboard::ingest=info}" target/release/switchboard serve --config "$CHAOS_DIR/node.toml" \
    >>"$CHAOS_DIR/node$i.log" 2>&1 </dev/null &
  echo $! >"$CHAOS_DIR/node$i.pid"
  disown $!
}
kill_node() { local pid; pid=$(cat "$CHAOS_DIR/node$1.pid"); kill -9 "$pid" 2>/dev/null || true; wait_gone "$pid"; }
redis_start() { # AOF on: a restart keeps leases, history, idempotency keys and queues
  mkdir -p "$CHAOS_DIR/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly yes \
    --appendfsync everysec --dir "$CHAOS_DIR/redis" --daemonize yes \
    --pidfile "$CHAOS_DIR/redis.pid" --logfile "$CHAOS_DIR/redis.log"
  for _ in $(seq 1 100); do port_open "$REDIS_PORT" && return 0; sleep 0.05; done
  echo "redis did not start" >&2; return 1
}
redis_stop() { # SIGTERM: Redis flushes the AOF and exits, as on SHUTDOWN
  local pid; pid=$(cat "$CHAOS_DIR/redis.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true; wait_gone "$pid"
}
pg_start() {
  run_pg "$pg_bin/pg_ctl" -D "$CHAOS_PG/data" -l "$CHAOS_PG/log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $CHAOS_PG -c max_connections=100" start >/dev/null
}
pg_stop() { run_pg "$pg_bin/pg_ctl" -D "$CHAOS_PG/data" -m fast -w stop >/dev/null; }

if [ "${1:-}" = ctl ]; then # called back by the driver
  case ${2:-} in
    kill) kill_node "$3" ;;
    start) start_node "$3" ;;
    redis-stop) redis_stop ;;
    redis-start) redis_start ;;
    pg-stop) pg_stop ;;
    pg-start) pg_start ;;
    *) echo "chaos.sh ctl: unknown action ${2:-}" >&2; exit 2 ;;
  esac
  exit 0
fi

MINUTES=${MINUTES:-15}
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
[ -n "$pg_bin" ] && [ -x "$pg_bin/postgres" ] || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "chaos: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
for p in $(seq "$CHAOS_PORT" $((CHAOS_PORT + 2))) $(seq $((CHAOS_PORT + 100)) $((CHAOS_PORT + 102))) "$REDIS_PORT" "$PG_PORT"; do
  if port_open "$p"; then echo "chaos: port $p is taken (set CHAOS_PORT)" >&2; exit 1; fi
done
ulimit -n "$(ulimit -Hn)"

cargo build --release --locked --bin switchboard --bin switchboard-chaos

rm -rf "$CHAOS_DIR"
mkdir -p "$CHAOS_DIR"
# Replay reaches back further than the longest outage at the campaign's rates (the default
# 100 events cover about 3 s of one room here); the bulk channel's 8 KB events keep less.
cat >"$CHAOS_DIR/node.toml" <<'TOML'
[history]
size = 10000
[[history.rules]]
prefix = "chaos-bulk"
size = 2000
ttl_secs = 300
TOML
CHAOS_PG=$(mktemp -d /tmp/switchboard-chaos.XXXXXX)
chmod 755 "$CHAOS_PG"
export CHAOS_PG CHAOS_PREFIX="chaos-$(date +%s)"
DRIVER=
cleanup() {
  [ -n "$DRIVER" ] && kill "$DRIVER" 2>/dev/null
  for i in 1 2 3; do
    [ -f "$CHAOS_DIR/node$i.pid" ] && kill_node "$i"
  done
  redis_stop
  [ -f "$CHAOS_PG/data/postmaster.pid" ] && pg_stop 2>/dev/null
  rm -rf "$CHAOS_PG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

redis_start
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$CHAOS_PG"
fi
run_pg "$pg_bin/initdb" -D "$CHAOS_PG/data" -U postgres -A trust >/dev/null
pg_start

wait_up() { for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$((CHAOS_PORT + $1 - 1))/up" >/dev/null && return 0; sleep 0.1; done
  echo "node $1 did not start"; cat "$CHAOS_DIR/node$1.log"; return 1; }
# Node 3 first, so that it takes the ingest lock (and the first kill hits the ingester).
start_node 3 && wait_up 3 && sleep 1
start_node 2 && start_node 1 && wait_up 2 && wait_up 1

nodes=$(for i in 1 2 3; do printf '127.0.0.1:%s,' $((CHAOS_PORT + i - 1)); done)
metrics=$(for i in 1 2 3; do printf '127.0.0.1:%s,' $((CHAOS_PORT + 99 + i)); done)
cmd=(target/release/switchboard-chaos --nodes "${nodes%,}" --metrics "${metrics%,}"
  --database-url "$DB_URL" --ctl "$PWD/scripts/chaos.sh" --secs $((MINUTES * 60))
  --label "chaos/${MINUTES}min" ${CHAOS_ARGS:-})
echo "+ ${cmd[*]}"
"${cmd[@]}" >"$CHAOS_DIR/result.json" &
DRIVER=$!
rc=0
wait "$DRIVER" || rc=$?
DRIVER=
[ "$rc" = 0 ] || { echo "chaos: the driver failed ($rc); logs in $CHAOS_DIR"; exit 1; }

RAW=bench/$(date +%F)-chaos.jsonl
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo "+dirty")
python3 - "$CHAOS_DIR/result.json" "$commit" "MINUTES=$MINUTES scripts/chaos.sh" >>"$RAW" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["commit"], d["command"] = sys.argv[2], sys.argv[3]
print(json.dumps(d))
PY
python3 scripts/chaos_report.py "$RAW" RELIABILITY.md >"$CHAOS_DIR/RELIABILITY.md"
mv "$CHAOS_DIR/RELIABILITY.md" RELIABILITY.md
echo "wrote RELIABILITY.md from the last line of $RAW"
