#!/usr/bin/env bash
# Soak test: one long-lived release server under repeating mixed load (connect/disconnect
# churn, fanout, presence churn, offline queues filled and drained, many channels), sampling
# the server's memory, open files and gauges after every cycle. A leak shows as RSS, file
# descriptors, connections or subscriptions that keep climbing from cycle to cycle instead
# of returning to a plateau once the clients of a cycle are gone.
#
#   scripts/soak.sh                  # 10 minutes
#   MINUTES=60 scripts/soak.sh
#
# Writes one CSV line per cycle to $OUT/soak.csv and prints a summary. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-10}
OUT=${OUT:-target/soak}
PORT=${PORT:-6001}
METRICS_PORT=${METRICS_PORT:-9601}
mkdir -p "$OUT"
rm -rf "$OUT/data"
ulimit -n "$(ulimit -Hn)"

cargo build --release --locked --bins
BENCH="target/release/switchboard-bench --port $PORT --timeout 120"
SWITCHBOARD_PORT=$PORT SWITCHBOARD_METRICS_PORT=$METRICS_PORT SWITCHBOARD_DATA_DIR="$OUT/data" \
  SWITCHBOARD_SERVER_MAX_CONNECTIONS=100000 SWITCHBOARD_SERVER_MAX_CONNECTIONS_PER_IP=0 SWITCHBOARD_APP_CLIENT_EVENTS_PER_SECOND=10000 \
  RUST_LOG=warn target/release/switchboard serve >"$OUT/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/up" >/dev/null && break; sleep 0.1; done

gauge() { # sum of a gauge's series in the Prometheus text
  curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }'
}
sample() { # cycle → CSV line
  local rss fds
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$PID/status")
  fds=$(ls "/proc/$PID/fd" | wc -l)
  echo "$1,$(date +%s),$rss,$fds,$(gauge switchboard_connections),$(gauge switchboard_subscriptions)"
}

echo "cycle,unix_time,rss_kib,open_fds,connections,subscriptions" > "$OUT/soak.csv"
end=$(( $(date +%s) + MINUTES * 60 ))
cycle=0
while [ "$(date +%s)" -lt "$end" ]; do
  cycle=$((cycle + 1))
  $BENCH --label soak/connect connect --conns 5000 >/dev/null
  $BENCH --label soak/fanout fanout --subs 1000 --rate 200 --secs 15 --payload 100 >/dev/null
  $BENCH --label soak/presence presence --observers 80 --churners 20 --secs 15 >/dev/null
  $BENCH --label soak/offline offline --users 500 --per-user 10 --payload 100 >/dev/null
  $BENCH --label soak/channels channels --conns 2000 --rate 5000 --secs 15 --payload 100 \
    --batch 10 >/dev/null
  sleep 3 # let the last closes finish
  sample "$cycle" | tee -a "$OUT/soak.csv"
done

kill -0 $PID || { echo "the server died"; cat "$OUT/server.log"; exit 1; }
python3 - "$OUT/soak.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
first, second, last = rows[0], rows[min(1, len(rows) - 1)], rows[-1]
mins = (int(last["unix_time"]) - int(first["unix_time"])) / 60
print(f"{len(rows)} cycles over {mins:.1f} min after the first")
for k in ("rss_kib", "open_fds", "connections", "subscriptions"):
    vals = [float(r[k]) for r in rows]
    print(f"{k:14} first {vals[0]:>10.0f}  second {float(second[k]):>10.0f}  "
          f"last {vals[-1]:>10.0f}  max {max(vals):>10.0f}")
PY
