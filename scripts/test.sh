#!/usr/bin/env bash
# The README's test command: format, lint, type-check, then every test against real PostgreSQL.
# Usage: scripts/test.sh [test files...]   (no arguments: the whole suite)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
  echo "== format";    npx prettier --check . --log-level warn
  echo "== lint";      npx eslint . --max-warnings 0
  echo "== typecheck"; npx tsc --noEmit
fi
echo "== tests"
exec npx tsx test/run.ts "$@"
