#!/usr/bin/env bash
# Call-rate benchmark: the highest rate at which `sipp -sn uac` (signalling
# only, no media) completes N calls with 0 failures against a release build
# of voicegate, with the gateway's CPU use at each rate.
#
#   tests/bench/call_rate.sh [CALLS] [RATES...]
#   (defaults: 2000 calls; rates 200 400 600 800 1000 1200 1500)
#
# Bounded: each run has CALLS calls and a timeout; the script stops at the
# first rate with failures. Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS=${1:-2000}
shift || true
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(200 400 600 800 1000 1200 1500)
command -v sipp >/dev/null || { echo "sipp not found (apt-get install sip-tester)" >&2; exit 1; }
cargo build --release -p voicegate >/dev/null
BIN=target/release/voicegate
WORK=$(mktemp -d)
trap 'kill $GW 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat > "$WORK/bench.toml" <<TOML
[sip]
listen = "127.0.0.1:25060"
[http]
listen = "127.0.0.1:28080"
[media]
# Enough pairs that the 5 s port quarantine never runs the pool dry.
rtp_port_min = 10000
rtp_port_max = 59999
[limits]
max_calls = 5000
[[agents]]
id = "echo"
dir = "config/agents/echo"
numbers = ["*"]
TOML
RUST_LOG=warn $BIN serve --config "$WORK/bench.toml" 2>"$WORK/gateway.log" &
GW=$!
sleep 1
TICKS=$(getconf CLK_TCK)
# CPU of the gateway and its children (the Python sandbox workers).
cpu_ticks() {
  local total=0 pid
  for pid in $GW $(pgrep -P "$GW"); do
    [ -r "/proc/$pid/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
echo "| target rate (calls/s) | achieved rate (calls/s) | calls | successful | failed | wall (s) | gateway+workers CPU (s) | gateway+workers CPU (% of one core) |"
echo "|---|---|---|---|---|---|---|---|"
for rate in "${RATES[@]}"; do
  before=$(cpu_ticks)
  start=$(date +%s.%N)
  set +e
  timeout 300 sipp 127.0.0.1:25060 -sn uac -r "$rate" -m "$CALLS" -l 5000 \
    -i 127.0.0.1 -p 0 -nostdin -trace_screen -screen_file "$WORK/screen.txt" \
    >/dev/null 2>"$WORK/sipp.err"
  rc=$?
  set -e
  end=$(date +%s.%N)
  after=$(cpu_ticks)
  ok=$(awk -F'|' '/Successful call/ {gsub(/ /,"",$3); v=$3} END {print v+0}' "$WORK/screen.txt")
  failed=$(awk -F'|' '/Failed call/ {gsub(/ /,"",$3); v=$3} END {print v+0}' "$WORK/screen.txt")
  wall=$(echo "$end - $start" | bc -l)
  cpu=$(echo "($after - $before) / $TICKS" | bc -l)
  pct=$(echo "100 * $cpu / $wall" | bc -l)
  achieved=$(echo "$ok / $wall" | bc -l)
  printf "| %s | %.0f | %s | %s | %s | %.2f | %.2f | %.0f |\n" "$rate" "$achieved" "$CALLS" "$ok" "$failed" "$wall" "$cpu" "$pct"
  if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
    echo "stopped at $rate calls/s (sipp exit $rc)"
    break
  fi
  sleep 6  # let the port quarantine and transaction timers settle
done
