#!/usr/bin/env bash
# Benchmarks Switchboard against Sockudo 5.2.0 on this machine, in one run, with the same
# scenarios and equivalent configs, and writes BENCHMARKS.md.
#
#   scripts/bench.sh                 # every scenario, 2 runs each
#   RUNS=3 SCENARIOS="fanout-1000x100 idle-10k" scripts/bench.sh
#
# Sockudo is built once with `cargo install sockudo --version 5.2.0 --locked --features redis` (needs
# protobuf-compiler and cmake; ~12 minutes on 2 cores) into $PEERS (outside the repository).
# Every run starts a fresh server process and stops it afterwards; traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-2}
PEERS=${PEERS:-$HOME/.cache/switchboard-peers}
OUT=${OUT:-target/bench}
PORT=${PORT:-6001}
SERVERS=${SERVERS:-"switchboard sockudo"}
ALL="idle-1k idle-10k idle-19k connect-10k fanout-1000x50 fanout-1000x100 fanout-1000x1000 fanout-1000x3000 channels-5000x2000 channels-5000x20000 presence-80x20 bus-fanout-1000x100 bus-offline-1000x20 xhr-fanout-1000x100 sse-fanout-1000x100"
SCENARIOS=${SCENARIOS:-$ALL}
mkdir -p "$OUT" "$PEERS"
ulimit -n "$(ulimit -Hn)"

cargo build --release --locked --bins
BENCH=target/release/switchboard-bench
SOCKUDO=$PEERS/sockudo/bin/sockudo
if [[ " $SERVERS " == *" sockudo "* && ! -x "$SOCKUDO" ]]; then
  if ! command -v protoc >/dev/null || ! command -v cmake >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler cmake
  fi
  # Its `redis` feature too, so that scripts/bench-cluster.sh can run it with its Redis adapter.
  cargo install sockudo --version 5.2.0 --locked --features redis --root "$PEERS/sockudo"
fi
cat > "$OUT/sockudo.json" <<JSON
{
  "debug": false, "host": "127.0.0.1", "port": $PORT, "mode": "production",
  "adapter": { "driver": "local" },
  "app_manager": { "driver": "memory", "array": { "apps": [ {
      "id": "app-id", "key": "app-key", "secret": "app-secret", "enabled": true,
      "policy": { "limits": { "max_connections": 0, "max_client_events_per_second": 10000 },
                  "features": { "enable_client_messages": false } } } ] } },
  "cache": { "driver": "memory" }, "queue": { "driver": "none" },
  "metrics": { "enabled": false }, "rate_limiter": { "enabled": false },
  "opentelemetry": { "enabled": false },
  "http_api": { "accept_traffic": { "enabled": false } },
  "shutdown_grace_period": 1
}
JSON

start_server() { # $1 = server name; sets PID. Every run starts from an empty data directory:
  # a server reopening a large one starts with memory that later allocations reuse.
  rm -rf "$OUT/data"
  case $1 in
    switchboard)
      SWITCHBOARD_PORT=$PORT SWITCHBOARD_METRICS_ENABLED=false SWITCHBOARD_DATA_DIR="$OUT/data" \
        SWITCHBOARD_SERVER_MAX_CONNECTIONS=200000 SWITCHBOARD_SERVER_MAX_CONNECTIONS_PER_IP=0 SWITCHBOARD_APP_CLIENT_EVENTS_PER_SECOND=10000 \
        RUST_LOG=warn target/release/switchboard serve >"$OUT/server.log" 2>&1 &
      PID=$! ;;
    sockudo)
      (cd "$PEERS/sockudo" && exec ./bin/sockudo --config "$OLDPWD/$OUT/sockudo.json") >"$OUT/server.log" 2>&1 &
      PID=$! ;;
  esac
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/up" >/dev/null 2>&1 && return 0
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server $1 did not start"; cat "$OUT/server.log"; return 1
}
stop_server() { # SIGTERM, then SIGKILL after 5 s; returns once the process is gone (its data dir lock too)
  kill "$PID" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || { wait "$PID" 2>/dev/null; return 0; }; sleep 0.1; done
  echo "server did not stop within 5 s of SIGTERM; killed" >&2
  kill -9 "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}

args_of() { # scenario name → bench arguments
  case $1 in
    idle-1k) echo "idle --conns 1000 --hold 5 --settle 2" ;;
    idle-10k) echo "idle --conns 10000 --hold 5 --settle 2" ;;
    # The most this machine allows: the open-files hard limit is 20,000 per process.
    idle-19k) echo "idle --conns 19000 --hold 5 --settle 2 --source-ips 127.0.0.2,127.0.0.3" ;;
    connect-10k) echo "connect --conns 10000" ;;
    fanout-1000x50) echo "fanout --subs 1000 --rate 50 --secs 10 --payload 100" ;;
    fanout-1000x100) echo "fanout --subs 1000 --rate 100 --secs 10 --payload 100" ;;
    fanout-1000x1000) echo "fanout --subs 1000 --rate 1000 --secs 10 --payload 100" ;;
    fanout-1000x3000) echo "fanout --subs 1000 --rate 3000 --secs 3 --payload 100" ;;
    channels-5000x2000) echo "channels --conns 5000 --rate 2000 --secs 10 --payload 100 --batch 10" ;;
    channels-5000x20000) echo "channels --conns 5000 --rate 20000 --secs 10 --payload 100 --batch 10" ;;
    presence-80x20) echo "presence --observers 80 --churners 20 --secs 10" ;;
    bus-fanout-1000x100) echo "--protocol bus fanout --subs 1000 --rate 100 --secs 10 --payload 100" ;;
    bus-offline-1000x20) echo "offline --users 1000 --per-user 20 --payload 100" ;;
    # The fan-out over HTTP streaming (no peer serves it): pusher-js's xhr_streaming framing,
    # and the bus over Server-Sent Events; compare with fanout-1000x100 / bus-fanout-1000x100.
    xhr-fanout-1000x100) echo "--transport http fanout --subs 1000 --rate 100 --secs 10 --payload 100" ;;
    sse-fanout-1000x100) echo "--protocol bus --transport http fanout --subs 1000 --rate 100 --secs 10 --payload 100" ;;
  esac
}

RAW="$OUT/raw.jsonl"
: > "$RAW"
for scenario in $SCENARIOS; do
  for server in $SERVERS; do
    [[ $scenario == @(bus|xhr|sse)-* && $server != switchboard ]] && continue
    for run in $(seq 1 "$RUNS"); do
      start_server "$server"
      cmd="$BENCH --port $PORT --server-pid $PID --timeout 240 --label $server/$scenario/r$run $(args_of "$scenario")"
      echo "+ $cmd"
      if line=$($cmd); then
        echo "$line" | python3 -c 'import json,sys; d=json.load(sys.stdin); d["command"]=sys.argv[1]; print(json.dumps(d))' "$cmd" >> "$RAW"
      else
        echo "{\"label\":\"$server/$scenario/r$run\",\"failed\":true,\"command\":\"$cmd\"}" >> "$RAW"
      fi
      stop_server
      sleep 1
    done
  done
done
python3 scripts/bench_report.py "$RAW" > BENCHMARKS.md
echo "wrote BENCHMARKS.md from $RAW"
