#!/usr/bin/env bash
# Benchmarks Switchboard clusters on this machine: 2 and 3 nodes on one Redis and on a Redis
# Cluster of 3 primaries. 1000 subscribers of one channel on node 1, publishes through node 2
# (so every event crosses Redis), node 3 (if any) without subscribers. Each run prints one
# JSON line (switchboard-bench's fan-out figures, plus each node's inbound Redis messages per
# event and Redis's CPU per publish) into $OUT/cluster.jsonl.
#
#   scripts/bench-cluster.sh
#   RUNS=3 RATES="100 1000 3000" TOPOLOGIES="redis cluster" NODES="2 3" scripts/bench-cluster.sh
#   SCENARIO=channels SUBS=1000 RATES=5000 TOPOLOGIES="redis cluster" NODES=2 scripts/bench-cluster.sh
#
# SCENARIO=channels puts one subscriber on each of $SUBS channels (all on node 1) and publishes
# batches of 10 over them, so the publish scripts spread over the channels' shards: each line
# then also gives every Redis process's share of the CPU and of the scripts run
# ("redis_cpu_share", "redis_scripts_share"), which is how the spread over a Redis Cluster's
# primaries is measured.
#
# Everything on 127.0.0.1; every process is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-2}
RATES=${RATES:-"1000 3000"}
TOPOLOGIES=${TOPOLOGIES:-"redis cluster"}
NODES=${NODES:-"2 3"}
SUBS=${SUBS:-1000}
SCENARIO=${SCENARIO:-fanout}
# switchboard, or sockudo (5.2.0 with its Redis adapter, one Redis only; built by scripts/bench.sh
# into $PEERS with its `redis` cargo feature: an older build without it refuses to start here,
# "Redis cache manager requested but the redis feature is not enabled", and must be removed).
SERVER=${SERVER:-switchboard}
PEERS=${PEERS:-$HOME/.cache/switchboard-peers}
SOCKUDO=$PEERS/sockudo/bin/sockudo
SECS=${SECS:-10}
OUT=${OUT:-target/bench-cluster}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ulimit -n "$(ulimit -Hn)"
cargo build --release --locked --bins
REL=${CARGO_TARGET_DIR:-target}/release
BENCH=$REL/switchboard-bench
RAW="$OUT/cluster.jsonl"
: > "$RAW"

# Ports from below the ephemeral range, all of a topology at once (free-ports.py says why).
free_ports() { python3 "$(dirname "${BASH_SOURCE[0]}")/free-ports.py" "$1"; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start_redis() { # $1 = redis | cluster; sets REDIS_URL and REDIS_PORTS
  rm -rf "$OUT/redis" && mkdir -p "$OUT/redis"
  REDIS_PORTS=()
  local n=1
  [[ $1 == cluster ]] && n=3
  local ports; mapfile -t ports < <(free_ports $((2 * n)))
  for i in $(seq 0 $((n - 1))); do
    local p=${ports[$((2 * i))]}
    local extra=()
    # The bus port defaults to port + 10000, past 65535 for high ports.
    [[ $1 == cluster ]] && extra=(--cluster-port "${ports[$((2 * i + 1))]}" --cluster-enabled yes --cluster-config-file "$OUT/redis/nodes-$p.conf" --cluster-node-timeout 2000)
    redis-server --bind 127.0.0.1 --port "$p" --save '' --appendonly no --dir "$OUT/redis" \
      --logfile "$OUT/redis/$p.log" "${extra[@]}" &
    PIDS+=($!)
    REDIS_PORTS+=("$p")
  done
  for p in "${REDIS_PORTS[@]}"; do
    for _ in $(seq 1 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  if [[ $1 == cluster ]]; then
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${REDIS_PORTS[@]}") --cluster-yes >/dev/null
    for _ in $(seq 1 100); do
      redis-cli -p "${REDIS_PORTS[0]}" cluster info | grep -q cluster_state:ok && break; sleep 0.1
    done
  fi
  REDIS_URL="redis://127.0.0.1:${REDIS_PORTS[0]}"
}

redis_sum() { # $1 = INFO section, $2... = its fields: their total over every Redis process
  local section=$1 t=0 p
  shift
  for p in "${REDIS_PORTS[@]}"; do
    t=$(redis-cli -p "$p" info "$section" | python3 -c '
import sys
d = dict(l.strip().split(":", 1) for l in sys.stdin if ":" in l)
t = float(sys.argv[1]) + sum(float(d[f]) for f in sys.argv[2:])
print(int(t) if t.is_integer() else t)' "$t" "$@")
  done
  echo "$t"
}
redis_each() { # → "cpu_seconds:scripts_run" of each Redis process, space-separated
  local out=() p
  for p in "${REDIS_PORTS[@]}"; do
    out+=("$( { redis-cli -p "$p" info cpu; redis-cli -p "$p" info commandstats; } | python3 -c '
import re, sys
cpu, scripts = 0.0, 0
for l in sys.stdin:
    l = l.strip()
    if l.startswith(("used_cpu_user:", "used_cpu_sys:")):
        cpu += float(l.split(":", 1)[1])
    m = re.match(r"cmdstat_(evalsha|eval|fcall)(_ro)?:calls=(\d+)", l)
    if m:
        scripts += int(m.group(3))
print(f"{cpu}:{scripts}")')")
  done
  echo "${out[*]}"
}
redis_net() { redis_sum stats total_net_input_bytes total_net_output_bytes; }  # bytes

node_cpu() { # $@ = pids → "user+system seconds" of each, from /proc
  local out=()
  for p in "$@"; do
    out+=("$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$p/stat")")
  done
  echo "${out[*]}"
}

received() { # $1 = metrics port → switchboard_cluster_messages_received_total (0 for Sockudo)
  if [[ $SERVER == sockudo ]]; then echo 0; return; fi
  curl -sf "http://127.0.0.1:$1/metrics" | awk '/^switchboard_cluster_messages_received_total /{print $2}'
}

sockudo_config() { # $1 = port, $2 = prefix: Sockudo 5.2.0 with its Redis adapter on $REDIS_URL
  # (its cache on Redis too: 5.2.0 refuses a clustered node with a node-local cache)
  cat <<JSON
{
  "debug": false, "host": "127.0.0.1", "port": $1, "mode": "production",
  "adapter": { "driver": "redis", "redis": { "prefix": "$2" } },
  "database": { "redis": { "host": "127.0.0.1", "port": ${REDIS_PORTS[0]}, "key_prefix": "$2" } },
  "app_manager": { "driver": "memory", "array": { "apps": [ {
      "id": "app-id", "key": "app-key", "secret": "app-secret", "enabled": true,
      "policy": { "limits": { "max_connections": 0, "max_client_events_per_second": 10000 },
                  "features": { "enable_client_messages": false } } } ] } },
  "cache": { "driver": "redis" }, "queue": { "driver": "none" },
  "metrics": { "enabled": false }, "rate_limiter": { "enabled": false },
  "opentelemetry": { "enabled": false },
  "http_api": { "accept_traffic": { "enabled": false } },
  "shutdown_grace_period": 1
}
JSON
}

for topology in $TOPOLOGIES; do
  for nodes in $NODES; do
    for rate in $RATES; do
      for run in $(seq 1 "$RUNS"); do
        start_redis "$topology"
        prefix="bench-$RANDOM$RANDOM"
        PORTS=(); MPORTS=(); NPIDS=()
        mapfile -t node_ports < <(free_ports $((2 * nodes)))
        for i in $(seq 1 "$nodes"); do
          p=${node_ports[$((2 * i - 2))]}; m=${node_ports[$((2 * i - 1))]}
          if [[ $SERVER == sockudo ]]; then
            sockudo_config "$p" "$prefix" > "$OUT/sockudo-$i.json"
            (cd "$(dirname "$SOCKUDO")/.." && exec ./bin/sockudo --config "$OUT/sockudo-$i.json") \
              >"$OUT/node-$i.log" 2>&1 &
          else
            SWITCHBOARD_PORT=$p SWITCHBOARD_METRICS_PORT=$m SWITCHBOARD_REDIS_URL=$REDIS_URL \
              SWITCHBOARD_REDIS_PREFIX=$prefix SWITCHBOARD_SERVER_MAX_CONNECTIONS=200000 \
              SWITCHBOARD_SERVER_MAX_CONNECTIONS_PER_IP=0 RUST_LOG=warn \
              "$REL/switchboard" serve >"$OUT/node-$i.log" 2>&1 &
          fi
          NPIDS+=($!); PIDS+=($!); PORTS+=("$p"); MPORTS+=("$m")
        done
        for p in "${PORTS[@]}"; do
          for _ in $(seq 1 100); do
            if [[ $SERVER == sockudo ]]; then (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break
            else curl -sf "http://127.0.0.1:$p/up" | grep -q '"redis":"up"' && break; fi
            sleep 0.1
          done
        done
        [[ $SERVER == sockudo ]] && sleep 2  # its Redis adapter subscribes after the listener opens
        before=(); for m in "${MPORTS[@]}"; do before+=("$(received "$m")"); done
        each0=$(redis_each); net0=$(redis_net); ncpu0=$(node_cpu "${NPIDS[@]}")
        label="$SERVER/$topology/${nodes}n/$SCENARIO-${SUBS}x$rate/r$run"
        cmd="$BENCH --port ${PORTS[0]} --publish-port ${PORTS[1]} --server-pid ${NPIDS[0]} --timeout 240 --label $label"
        if [[ $SCENARIO == channels ]]; then
          cmd+=" channels --conns $SUBS --rate $rate --secs $SECS --payload 100 --batch 10"
        else
          cmd+=" fanout --subs $SUBS --rate $rate --secs $SECS --payload 100"
        fi
        echo "+ $cmd"
        if line=$($cmd); then
          each1=$(redis_each); net1=$(redis_net); ncpu1=$(node_cpu "${NPIDS[@]}")
          after=(); for m in "${MPORTS[@]}"; do after+=("$(received "$m")"); done
          echo "$line" | python3 -c '
import json, sys
d = json.load(sys.stdin)
before = [float(x) for x in sys.argv[1].split()]
after = [float(x) for x in sys.argv[2].split()]
events = max(d.get("events_accepted", 0), 1)
d["inbound_per_event"] = [round((a - b) / events, 3) for a, b in zip(after, before)]
d["redis_net_bytes_per_publish"] = round((int(sys.argv[7]) - int(sys.argv[6])) / events)
c0 = [float(x) for x in sys.argv[8].split()]
c1 = [float(x) for x in sys.argv[9].split()]
d["node_cpu_us_per_event"] = [round((b - a) * 1e6 / events, 2) for a, b in zip(c0, c1)]
e0 = [[float(v) for v in x.split(":")] for x in sys.argv[3].split()]
e1 = [[float(v) for v in x.split(":")] for x in sys.argv[4].split()]
cpu = [b[0] - a[0] for a, b in zip(e0, e1)]
scripts = [b[1] - a[1] for a, b in zip(e0, e1)]
d["redis_cpu_us_per_publish"] = round(sum(cpu) * 1e6 / events, 2)
d["redis_cpu_share"] = [round(c / max(sum(cpu), 1e-9), 3) for c in cpu]
d["redis_scripts_share"] = [round(x / max(sum(scripts), 1), 3) for x in scripts]
d["redis_scripts_per_publish"] = round(sum(scripts) / events, 3)
d["command"] = sys.argv[5]
print(json.dumps(d))' "${before[*]}" "${after[*]}" "$each0" "$each1" "$cmd" "$net0" "$net1" "$ncpu0" "$ncpu1" | tee -a "$RAW"
        else
          echo "{\"label\":\"$label\",\"failed\":true}" | tee -a "$RAW"
        fi
        cleanup; PIDS=()
        sleep 1
      done
    done
  done
done
echo "wrote $RAW"
