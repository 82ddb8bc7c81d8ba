#!/usr/bin/env bash
# BPF time per connection (tcp) or query (dns) as a paired ratio: `bench/bpf-cost.sh` with the
# agent and with empty programs (EMPTY=1), alternated PAIRS times, each pair's ratio taken, and
# the median of the ratios reported with its range. On this VM the same build's BPF time drifts by
# up to 10 % from minute to minute; a ratio of runs seconds apart cancels most of that drift,
# where a ratio of two separately taken averages does not.
#
# Two ratios: against all the empty programs (`credwatch-loadgen baseline --all-hooks`: cgroup_skb,
# connect4/6, sock_ops, the hooks credwatch attaches on any kernel), and against those at the hooks
# this credwatch run attached (where sock_ops records connects, no connect4: its empty run is left
# out of the floor).
#
#   sudo bench/bpf-cost-pairs.sh tcp|dns [PAIRS] [COUNT]
#   sudo AGENT_BIN=/tmp/other bench/bpf-cost-pairs.sh tcp   (another build, as bpf-cost.sh)
#   sudo AGENT_BIN=/tmp/a VERSUS_BIN=/tmp/b bench/bpf-cost-pairs.sh tcp
#                       (two builds: each pair is build a, then build b in place of the empty programs)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: bench/bpf-cost-pairs.sh tcp|dns [PAIRS] [COUNT]}
PAIRS=${2:-15} N=${3:-100000}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for i in $(seq "$PAIRS"); do
  bench/bpf-cost.sh "$MODE" "$N" > "$OUT/a$i"
  if [ -n "${VERSUS_BIN:-}" ]; then
    AGENT_BIN=$VERSUS_BIN bench/bpf-cost.sh "$MODE" "$N" > "$OUT/b$i"
  else
    EMPTY=1 bench/bpf-cost.sh "$MODE" "$N" > "$OUT/b$i"
  fi
done
python3 - "$OUT" "$PAIRS" "${VERSUS_BIN:-}" <<'PY'
import re, statistics, sys
out, pairs, versus = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def programs(path):
    """{program: ns per connection or query} from one bpf-cost.sh run."""
    found = {}
    for line in open(path):
        m = re.match(r"(\w+): .* ([0-9]+) ns/(connection|query)$", line.strip())
        if m:
            found[m.group(1)] = int(m.group(2))
    if not found:
        sys.exit(f"{path}: no per-program lines")
    return found

rows = []
for i in range(1, pairs + 1):
    a, b = programs(f"{out}/a{i}"), programs(f"{out}/b{i}")
    total_a, total_b = sum(a.values()), sum(b.values())
    # The empty connect4/6 runs, left out where credwatch attached no connect4/6.
    unused = 0 if versus or "cw_connect4" in a else sum(
        ns for name, ns in b.items() if name.startswith("cw_bench_empty_connect"))
    rows.append((total_a, total_b, total_b - unused))
    print(f"pair {i}: credwatch {total_a} ns, {versus or 'empty programs'} {total_b} ns"
          + (f" ({total_b - unused} ns at the hooks credwatch attached)" if unused else ""))

def summary(what, ratios):
    ratios = sorted(ratios)
    return (f"credwatch / {what}: median {statistics.median(ratios):.3f} "
            f"(range {ratios[0]:.3f}-{ratios[-1]:.3f}, n={len(ratios)})")

print(summary(versus or "empty programs", [a / b for a, b, _ in rows]))
if not versus and any(b != same for _, b, same in rows):
    print(summary("empty programs at the hooks credwatch attached", [a / s for a, _, s in rows]))
print(f"medians: credwatch {statistics.median(a for a, _, _ in rows):.0f} ns, "
      f"{versus or 'empty programs'} {statistics.median(b for _, b, _ in rows):.0f} ns")
PY
