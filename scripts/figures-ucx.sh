#!/usr/bin/env bash
# The UCX figures: `ucx_info -d` on two migros devices and the
# ucx_perftest table (tag_lat, tag_bw, ucp_put_bw, ucp_get over rc_verbs,
# ud_verbs and UCX's tcp on lo, one run), printed by the e2e test
# crates/migros-ibverbs/tests/ucx.rs. Needs root and the UCX packages
# (scripts/setup.sh); takes the e2e lock as the tests do.
set -euo pipefail
cd "$(dirname "$0")/.."
MIGROS_TESTS_REQUIRED=1 flock -o /tmp/migros-e2e.lock nice -n 19 \
  cargo test -p migros-ibverbs --test ucx -- --nocapture --test-threads=1 2>&1 \
  | sed -n '/^ucx_info -d:/,/^test /p;/^ucx_perftest,/,/^test /p' | grep -v '^test '
