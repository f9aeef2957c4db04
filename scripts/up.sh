#!/usr/bin/env bash
# Quick start: install what is missing, then run Cellar all-in-one on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bin/cellar up "$@"
