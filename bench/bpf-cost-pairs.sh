#!/usr/bin/env bash
# BPF time per connection (tcp) or query (dns) as a paired ratio: `bench/bpf-cost.sh` with the
# agent and with empty programs (EMPTY=1), alternated PAIRS times, each pair's ratio taken, and
# the median of the ratios reported with its range. On this VM the same build's BPF time drifts by
# up to 10 % from minute to minute; a ratio of runs seconds apart cancels most of that drift,
# where a ratio of two separately taken averages does not.
#
#   sudo bench/bpf-cost-pairs.sh tcp|dns [PAIRS] [COUNT]
#   sudo AGENT_BIN=/tmp/other bench/bpf-cost-pairs.sh tcp   (another build, as bpf-cost.sh)
#   sudo AGENT_BIN=/tmp/a VERSUS_BIN=/tmp/b bench/bpf-cost-pairs.sh tcp
#                       (two builds: each pair is build a, then build b in place of the empty programs)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: bench/bpf-cost-pairs.sh tcp|dns [PAIRS] [COUNT]}
PAIRS=${2:-15} N=${3:-100000}
total() { sed -n 's/^total BPF per [a-z]*: \([0-9]*\) ns$/\1/p'; }
ratios=()
for i in $(seq "$PAIRS"); do
  agent=$(bench/bpf-cost.sh "$MODE" "$N" | total)
  if [ -n "${VERSUS_BIN:-}" ]; then
    empty=$(AGENT_BIN=$VERSUS_BIN bench/bpf-cost.sh "$MODE" "$N" | total)
  else
    empty=$(EMPTY=1 bench/bpf-cost.sh "$MODE" "$N" | total)
  fi
  [ -n "$agent" ] && [ -n "$empty" ] || { echo "pair $i: no total" >&2; exit 1; }
  ratios+=("$agent/$empty")
  echo "pair $i: credwatch $agent ns, ${VERSUS_BIN:-empty programs} $empty ns"
done
python3 - "${ratios[@]}" <<'PY'
import os, statistics, sys
pairs = [tuple(map(int, r.split("/"))) for r in sys.argv[1:]]
ratios = sorted(a / e for a, e in pairs)
print(f"credwatch / {os.environ.get('VERSUS_BIN') or 'empty programs'}, BPF time: median {statistics.median(ratios):.3f} "
      f"(range {ratios[0]:.3f}-{ratios[-1]:.3f}, n={len(ratios)}); "
      f"medians {statistics.median(a for a, _ in pairs):.0f} / {statistics.median(e for _, e in pairs):.0f} ns")
PY
