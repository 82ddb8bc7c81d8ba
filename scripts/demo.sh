#!/usr/bin/env bash
# Runs credwatch's demo (credwatch-demo, the agent library attached to a private cgroup subtree)
# on this host (needs root): installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo xtask demo -- "$@"
