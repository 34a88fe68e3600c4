#!/usr/bin/env bash
# Samples per second through the gateway (issue 14): the library runtime against the
# example gateway path of the commit before it, side by side, interleaved.
#   docs/bench/runtime_compare.sh BASE_CHECKOUT [ROUNDS] [SECS]
# BASE_CHECKOUT: a worktree of the commit before the runtime (b689bd7) with
# `cargo build --release -p iiot-reference` done in it; this checkout needs the same.
#
# One `iiot sim` (this checkout's) serves a map of 1 005 tags polled every 1 ms with
# no deadband, so the poller offers far more samples than the pipeline can take:
# what is measured is the gateway's pipeline (report by exception, batching, encode,
# outbox append with fdatasync per batch, forwarder with PUBACKs from Mosquitto at
# $MQTT, default 127.0.0.1:1883). Each run starts on a fresh outbox, waits WARM
# seconds, then counts samples appended to the outbox
# (`iiot_reference_gateway_samples_total`) and batches the broker confirmed
# (`iiot_outbox_sent_total`) over SECS seconds. Both binaries read the same
# config file, written in the old key forms (the new one upgrades them).
set -euo pipefail
BASE="$1"; ROUNDS="${2:-5}"; SECS="${3:-15}"; WARM="${WARM:-3}"
NEW="${NEW:-$(cd "$(dirname "$0")/../.." && pwd)}"
NEW_BIN="${NEW_BIN:-$NEW/target/release/iiot}"
BASE_BIN="${BASE_BIN:-$BASE/target/release/iiot}"
MQTT="${MQTT:-mqtt://127.0.0.1:1883}"
OUT="${OUT:-/tmp/runtime-bench}"
rm -rf "$OUT"; mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The map: the plant's five tags plus 1 000 u16 holding registers.
python3 - "$OUT/map.toml" <<'PY'
import sys
t = ['[poll_groups.default]', 'interval_ms = 1', '']
t += ['[[tags]]\nname = "tank1/level"\naddress = "40001"\ntype = "f32"',
      '[[tags]]\nname = "tank1/temperature"\naddress = "30001"\ntype = "i16"',
      '[[tags]]\nname = "pump1/running"\naddress = "00001"\ntype = "bool"',
      '[[tags]]\nname = "pump1/flow"\naddress = "40011"\ntype = "f32"\norder = "CDAB"',
      '[[tags]]\nname = "pump1/total"\naddress = "40013"\ntype = "u32"\norder = "CDAB"']
for i in range(1000):
    t.append(f'[[tags]]\nname = "bench/r{i}"\narea = "holding_register"\naddress = {100 + i}\ntype = "u16"')
open(sys.argv[1], "w").write("\n".join(t) + "\n")
PY
SIM_PORT=$(free_port)
cat > "$OUT/plc.toml" <<EOF
listen = "127.0.0.1:$SIM_PORT"
register_map = "map.toml"
[plant]
tick_ms = 100
EOF
"$NEW_BIN" sim --config "$OUT/plc.toml" > "$OUT/sim.out" 2> "$OUT/sim.err" &
SIM=$!
trap 'kill $SIM 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q "listening" "$OUT/sim.out" && break; sleep 0.1; done

scrape() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n {print $2}' | head -1; }

run() { # label bin round
  local label="$1" bin="$2" r="$3" port data
  port=$(free_port); data="$OUT/data-$label-$r"
  sed -e "s|@DATA@|$data|" -e "s|@MQTT@|$MQTT|" -e "s|@PORT@|$SIM_PORT|" \
      -e "s|@DEV@|bench-$label-$r|" "$OUT/gateway.tmpl" > "$OUT/gateway-$label-$r.toml"
  "$bin" --metrics "127.0.0.1:$port" gateway --config "$OUT/gateway-$label-$r.toml" \
      > "$OUT/gw-$label-$r.out" 2> "$OUT/gw-$label-$r.err" &
  local gw=$!
  sleep "$WARM"
  local s0 b0 s1 b1
  s0=$(scrape "$port" iiot_reference_gateway_samples_total); b0=$(scrape "$port" iiot_outbox_sent_total)
  sleep "$SECS"
  s1=$(scrape "$port" iiot_reference_gateway_samples_total); b1=$(scrape "$port" iiot_outbox_sent_total)
  kill -INT "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true
  rm -rf "$data"
  echo "$label $r $(python3 -c "print(round(($s1-$s0)/$SECS), round(($b1-$b0)/$SECS))")" | tee -a "$OUT/results.txt"
}

cat > "$OUT/gateway.tmpl" <<EOF
device_id = "@DEV@"
register_map = "map.toml"
data_dir = "@DATA@"
[uns]
enterprise = "bench"
site = "s"
area = "a"
line = "l"
device_type = "plc"
[modbus.transport.tcp]
host = "127.0.0.1"
port = @PORT@
[modbus.poller]
timeout = 1000
retries = 0
[mqtt]
broker_url = "@MQTT@"
keepalive_s = 30
reconnect_max_ms = 1000
[batch]
max_samples = 1000
max_delay_ms = 100
[forwarder]
max_in_flight = 32
backoff_initial = 100
backoff_max = 1000
EOF
for r in $(seq 1 "$ROUNDS"); do
  run base "$BASE_BIN" "$r"
  run new "$NEW_BIN" "$r"
done
python3 - "$OUT/results.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda label, i: statistics.median(float(r[i]) for r in rows if r[0] == label)
for label in ("base", "new"):
    print(f"{label}: samples/s {[int(r[2]) for r in rows if r[0]==label]} median {med(label,2):,.0f}; "
          f"confirmed batches/s median {med(label,3):,.0f}")
print(f"new / base (samples/s, medians): {med('new',2)/med('base',2):.2f}x")
PY
