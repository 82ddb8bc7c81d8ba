#!/usr/bin/env bash
# Runs every check and test (what CI runs): installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo xtask test "$@"
