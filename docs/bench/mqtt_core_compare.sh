#!/usr/bin/env bash
# Interleaved comparison of the MQTT core (issue 13) with the commit before it.
#   docs/bench/mqtt_core_compare.sh BASE_CHECKOUT [ROUNDS]
# BASE_CHECKOUT: a worktree of the previous commit with its benches built
# (`cargo bench -p iiot-protocols --bench mqtt_publish --no-run` and
# `cargo bench -p iiot-ingest --bench e2e_mosquitto --no-run` in it).
# Runs, ROUNDS times (default 5) in turn: base, new under MQTT 3.1.1, new under
# MQTT 5, for the confirmed-publish bench and then for the end-to-end bench.
# Writes raw outputs to $OUT (default /tmp/mqtt-core-bench) and prints medians.
set -euo pipefail
BASE="$1"; ROUNDS="${2:-5}"; OUT="${OUT:-/tmp/mqtt-core-bench}"
NEW="${NEW:-$(cd "$(dirname "$0")/../.." && pwd)}"
mkdir -p "$OUT"
# NEW_TARGET: a target directory for the new checkout (e.g. one it shares).
tgt() { if [ "$1" = "$NEW" ] && [ -n "${NEW_TARGET:-}" ]; then echo "CARGO_TARGET_DIR=$NEW_TARGET"; else echo "X=0"; fi; }
run_pub() { # dir label env...
  local dir="$1" label="$2"; shift 2
  (cd "$dir" && env "$(tgt "$dir")" "$@" cargo bench -q -p iiot-protocols --bench mqtt_publish 2>/dev/null) >"$OUT/pub-$label-$r.txt"
}
run_e2e() {
  local dir="$1" label="$2"; shift 2
  (cd "$dir" && env "$(tgt "$dir")" IIOT_BENCH_ROUNDS=1 "$@" cargo bench -q -p iiot-ingest --bench e2e_mosquitto 2>/dev/null) >"$OUT/e2e-$label-$r.txt"
}
for r in $(seq 1 "$ROUNDS"); do
  run_pub "$BASE" base X=1
  run_pub "$NEW" v311 IIOT_BENCH_MQTT=3.1.1
  run_pub "$NEW" v5 IIOT_BENCH_MQTT=5
done
for r in $(seq 1 "$ROUNDS"); do
  run_e2e "$BASE" base X=1
  run_e2e "$NEW" v311 IIOT_BENCH_MQTT=3.1.1
  run_e2e "$NEW" v5 IIOT_BENCH_MQTT=5
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import re, statistics, sys, glob
out, rounds = sys.argv[1], int(sys.argv[2])
def kelem(v, unit):
    return float(v) * {"elem/s": 1e-3, "Kelem/s": 1, "Melem/s": 1e3}[unit]
pub = {}
for label in ["base", "v311", "v5"]:
    for r in range(1, rounds + 1):
        name = None
        for line in open(f"{out}/pub-{label}-{r}.txt"):
            m = re.match(r"^(mqtt_confirmed_qos1_10k/\S+)", line)
            if m: name = m.group(1)
            m = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+)", line)
            if m and name:
                pub.setdefault((label, name), []).append(kelem(m.group(1), m.group(2)))
                name = None
print("| bench | base (3.1.1) | new 3.1.1 | new 5 | new 3.1.1 / base | new 5 / base |")
print("|---|---:|---:|---:|---:|---:|")
names = sorted({n for (_, n) in pub})
for n in names:
    med = {l: statistics.median(pub[(l, n)]) if (l, n) in pub else None for l in ["base", "v311", "v5"]}
    f = lambda v: f"{v*1000:,.0f}" if v else "–"
    ratio = lambda a, b: f"{a/b:.2f}x" if a and b else "–"
    print(f"| {n.split('/',1)[1]} | {f(med['base'])} | {f(med['v311'])} | {f(med['v5'])} | {ratio(med['v311'], med['base'])} | {ratio(med['v5'], med['base'])} |")
print()
e2e = {}
for label in ["base", "v311", "v5"]:
    for r in range(1, rounds + 1):
        for line in open(f"{out}/e2e-{label}-{r}.txt"):
            cells = [c.strip() for c in line.split("|")]
            if len(cells) > 3 and cells[1].startswith(("direct", "**end to end**", "psql COPY")):
                key = cells[1].split(":")[0].strip("* ")
                try:
                    e2e.setdefault((label, key), []).append(float(cells[2].replace(" ", "").replace(",", "")))
                except ValueError:
                    pass
print("| path (rows/s, median of rounds) | base (3.1.1) | new 3.1.1 | new 5 | new 3.1.1 / base | new 5 / base |")
print("|---|---:|---:|---:|---:|---:|")
for key in sorted({k for (_, k) in e2e}):
    med = {l: statistics.median(e2e[(l, key)]) if (l, key) in e2e else None for l in ["base", "v311", "v5"]}
    f = lambda v: f"{v:,.0f}" if v else "–"
    ratio = lambda a, b: f"{a/b:.2f}x" if a and b else "–"
    print(f"| {key} | {f(med['base'])} | {f(med['v311'])} | {f(med['v5'])} | {ratio(med['v311'], med['base'])} | {ratio(med['v5'], med['base'])} |")
PY
