#!/usr/bin/env bash
# Summarises the ledger the end-to-end tests append to ($MIGROS_TESTS_LEDGER,
# see crates/migros-test-support): one line per test decision,
# outcome<TAB>test<TAB>what was missing. A test counts once: failed (a
# missing prerequisite under MIGROS_TESTS_REQUIRED) wins over skipped,
# skipped over ran. Prints each test that did not run, with why, then
#   end-to-end tests: N ran, M skipped, K failed for a missing prerequisite
# With MIGROS_TESTS_REQUIRED set, exits 1 when any did not run or none ran.
# Usage: scripts/e2e-summary.sh LEDGER
set -euo pipefail
ledger=${1:?usage: $0 LEDGER}
[ -f "$ledger" ] || : > "$ledger"
awk -F '\t' '
  { rank = ($1 == "failed") ? 3 : ($1 == "skipped") ? 2 : 1
    if (rank > best[$2]) { best[$2] = rank; why[$2] = $3 } }
  END {
    for (t in best) {
      n[best[t]]++
      if (best[t] > 1) printf "  %s %s: %s\n", (best[t] == 3 ? "FAILED" : "skipped"), t, why[t] | "sort"
    }
    close("sort")
    printf "end-to-end tests: %d ran, %d skipped, %d failed for a missing prerequisite\n", n[1], n[2], n[3]
    if (n[1] == 0 || n[2] + n[3] > 0) exit 2
  }' "$ledger" || incomplete=1
if [ "${incomplete:-0}" = 1 ]; then
  case "${MIGROS_TESTS_REQUIRED:-}" in
    1|true|TRUE)
      echo "tests: FAILED: with MIGROS_TESTS_REQUIRED every end-to-end test must run" >&2
      exit 1 ;;
  esac
fi
