#!/usr/bin/env bash
# Kernel time the agent's programs spend per loopback connection (tcp) or DNS query (dns): BPF
# stats (run_time_ns / run_cnt per program) around one credwatch-loadgen run in a test cgroup.
#
#   sudo bench/bpf-cost.sh tcp|dns [COUNT]
#   sudo EMPTY=1 bench/bpf-cost.sh tcp|dns [COUNT]   (the floor: empty programs at the same hooks,
#                                                     `credwatch-loadgen baseline --all-hooks`)
#   sudo PERF=1 bench/bpf-cost.sh tcp|dns [COUNT]    (also `perf record` of the generator's CPU:
#                                                     the top symbols, kernel helpers included;
#                                                     KEEP_PERF=FILE keeps the recording, e.g.
#                                                     for `perf script -F ip,sym,symoff -G`)
#   sudo AGENT_ARGS="--cluster-cidr 10.0.0.0/8" bench/bpf-cost.sh tcp   (more flags for credwatch
#                                                     run: with ranges, connect4 walks the range trie)
#   for i in 1 2 3; do sudo bench/bpf-cost.sh tcp; sudo AGENT_BIN=/tmp/other bench/bpf-cost.sh tcp; done
#                                                    (two builds alternated: this tree's and a copy)
#
# Builds the release agent and load generator, attaches only to <cgroup2>/credwatch-test-<pid>,
# sends only to loopback, and removes everything it created on exit. The numbers include BPF
# stats' own clock reads (tens of ns per run).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: bench/bpf-cost.sh tcp|dns [COUNT]}
N=${2:-20000}
[ "$(id -u)" -eq 0 ] || { echo "needs root" >&2; exit 1; }
cargo build -q --release -p agent -p loadgen
# AGENT_BIN: another build of the agent (a copy of target/release/credwatch from another commit),
# so that two builds can be measured in alternation: on this VM the same build drifts by up to
# 8 % within an hour, more than the effect of one change.
BIN=${AGENT_BIN:-target/release/credwatch} LOADGEN=target/release/credwatch-loadgen
CG2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
CG=$CG2/credwatch-test-$$
DNS_ADDR=127.0.0.95 PORT=19998
STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
AG="" DM="" ADDED=""
cleanup() {
  sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"
  for p in $AG $DM; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  [ -n "$ADDED" ] && ip addr del "$DNS_ADDR/32" dev lo
  rmdir "$CG/pod" "$CG" 2>/dev/null || true
}
trap cleanup EXIT
mkdir -p "$CG/pod"
if [ "$MODE" = dns ]; then
  ip addr show lo | grep -q " $DNS_ADDR/" || { ip addr add "$DNS_ADDR/32" dev lo; ADDED=1; }
  dnsmasq --keep-in-foreground --no-resolv --no-hosts --listen-address=$DNS_ADDR --bind-interfaces \
    --port=53 --address=/bench.test/192.0.2.1 --cache-size=0 & DM=$!
  GEN=(dns-udp --server $DNS_ADDR:53 --count "$N" --name bench.test)
else
  GEN=(tcp-connect --count "$N")
fi
if [ -n "${EMPTY:-}" ]; then
  exec 3< <(exec $LOADGEN baseline --all-hooks --cgroup-path "$CG"); AG=$!
  read -r -u 3 line && [ "$line" = ready ] || { echo "loadgen baseline did not attach" >&2; exit 1; }
else
  $BIN --log-level warn run --cgroup-path "$CG" --listen 127.0.0.1:$PORT --no-default-endpoints \
    --metadata-endpoint 127.0.0.1:1 ${AGENT_ARGS:-} & AG=$!
  until curl -sf 127.0.0.1:$PORT/readyz >/dev/null; do
    kill -0 "$AG" 2>/dev/null || { echo "credwatch exited before it was ready" >&2; exit 1; }
    sleep 0.1
  done
fi
snapshot() {
  bpftool -j prog show | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p.get("name", "").startswith("cw_"):
        print(p["id"], p["name"], p.get("run_time_ns", 0), p.get("run_cnt", 0))'
}
sysctl -qw kernel.bpf_stats_enabled=1
before=$(snapshot)
[ -n "$DM" ] && taskset -pc 1 "$DM" >/dev/null  # dnsmasq on the generator's CPU, as in bench dns
PERF_OUT=$(mktemp -d)
if [ -n "${PERF:-}" ]; then
  ( echo $BASHPID > "$CG/pod/cgroup.procs"
    exec taskset -c 1 perf record -q -o "$PERF_OUT/perf.data" -C 1 -g -- $LOADGEN "${GEN[@]}" )
else
  ( echo $BASHPID > "$CG/pod/cgroup.procs"; exec taskset -c 1 $LOADGEN "${GEN[@]}" )
fi
after=$(snapshot)
python3 - "$N" "$MODE" "$before" "$after" <<'PY'
import sys
n, mode, before, after = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
b = {l.split()[0]: l.split() for l in before.splitlines()}
unit = "connection" if mode == "tcp" else "query"
total = 0.0
for line in after.splitlines():
    pid, name, ns, cnt = line.split()
    if pid not in b:
        continue
    dns, dc = int(ns) - int(b[pid][2]), int(cnt) - int(b[pid][3])
    if dc:
        print(f"{name}: {dc / n:.2f} runs/{unit}, {dns / dc:.0f} ns/run, {dns / n:.0f} ns/{unit}")
        total += dns / n
print(f"total BPF per {unit}: {total:.0f} ns")
PY
if [ -n "${PERF:-}" ]; then
  echo "perf, CPU 1 (generator and, for dns, dnsmasq), top symbols:"
  perf report -i "$PERF_OUT/perf.data" --no-children --sort sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40 || true
fi
[ -n "${KEEP_PERF:-}" ] && cp "$PERF_OUT/perf.data" "$KEEP_PERF"; rm -rf "$PERF_OUT"
