#!/usr/bin/env bash
# Installs what is needed (scripts/install.sh), runs the whole test suite, then the mutation check
# (scripts/mutations.sh). Ends with one line "N passed, N failed, N skipped" computed from tap's results plus one
# per mutation (caught: passed, survived: failed); exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  bash scripts/install.sh || { echo "install failed"; echo "0 passed, 1 failed"; exit 1; }
fi
export MEDIASOUP_WORKER_BIN=/usr/lib/x86_64-linux-gnu/mediasoup/mediasoup-worker

typecheck_failed=0
echo "[test] type-checking"
if ! npx tsc -p tsconfig.json --noEmit; then typecheck_failed=1; fi

log=$(mktemp)
jobs=()
if [ -n "${DRACHTIO_HOST:-}" ]; then
  # A real drachtio-server hands each new incoming INVITE to any of the apps connected to it: test files that each
  # connect a bridge to it must not run at the same time.
  echo "[test] DRACHTIO_HOST is set: the real drachtio-server variants run too, so test files run one at a time"
  jobs=(--jobs=1)
fi
# Tests that load the machine on purpose and judge audio second by second (overload: a test-sized capacity filled
# with busy CPU; cluster: three bridge processes; leaks: 2,000 calls, 16 at a time, through two media threads, the
# answered ones checked for tone both ways) run after the others, one at a time, so that no other test file shares
# the two cores with them and their verdicts are about the bridge, not about what ran beside them.
solo=(test/reliability/overload.test.ts test/e2e/cluster.test.ts test/reliability/leaks.test.ts)
tap_rc=0
if [ "$#" -gt 0 ]; then
  echo "[test] running tap"
  npx tap "${jobs[@]}" "$@" 2>&1 | tee "$log"
  tap_rc=${PIPESTATUS[0]}
else
  excludes=()
  for f in "${solo[@]}"; do excludes+=("--exclude=$f"); done
  echo "[test] running tap (all but the load-sensitive files)"
  npx tap "${jobs[@]}" "${excludes[@]}" 2>&1 | tee "$log"
  tap_rc=${PIPESTATUS[0]}
  echo "[test] running tap, one file at a time: ${solo[*]}"
  npx tap --jobs=1 "${solo[@]}" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}; [ "$rc" -ne 0 ] && tap_rc=$rc
fi

skipped_lines=$(grep -E '^\s*ok [0-9]+ - .* # SKIP' "$log" | sed -E 's/^\s*ok [0-9]+ - //' || true)
if [ -n "$skipped_lines" ]; then
  echo "[test] SKIPPED (each with its reason):"
  echo "$skipped_lines" | sed 's/^/[test]   /'
fi
# One summary line per tap run: add them up (a missing one is a failure below).
summaries=$(grep -E '^# \{ total: ' "$log")
expected_summaries=1
[ "$#" -eq 0 ] && expected_summaries=2
rm -f "$log"

# Mutation check (scripts/mutations.sh): each deliberate breakage the relevant tests catch counts as 1 passed, each
# that survives (or can no longer be applied) as 1 failed. MUTATIONS=0, or test files given as arguments, skip it
# (each mutation then counts as skipped).
mutations_caught=0
mutations_failed=0
mutations_skipped=0
if [ "${MUTATIONS:-1}" = "0" ] || [ "$#" -gt 0 ]; then
  mutations_skipped=$(grep -cE '^  "[a-z0-9-]+\|' scripts/mutations.sh)
  echo "[test] mutation check skipped (MUTATIONS=0 or test files named): $mutations_skipped mutations"
else
  echo "[test] mutation check"
  mlog=$(mktemp)
  bash scripts/mutations.sh 2>&1 | tee "$mlog"
  mutations_rc=${PIPESTATUS[0]}
  mline=$(grep -E '^mutations: [0-9]+ caught, [0-9]+ survived$' "$mlog" | tail -n 1)
  rm -f "$mlog"
  if [ -z "$mline" ]; then
    echo "[test] the mutation check printed no result (exit $mutations_rc)"
    mutations_failed=1
  else
    mutations_caught=$(echo "$mline" | grep -oE '[0-9]+ caught' | grep -oE '[0-9]+')
    mutations_failed=$(echo "$mline" | grep -oE '[0-9]+ survived' | grep -oE '[0-9]+')
    if [ "$mutations_rc" -ne 0 ] && [ "$mutations_failed" -eq 0 ]; then mutations_failed=1; fi
  fi
fi
num() { echo "$summaries" | grep -oE "$1: [0-9]+" | grep -oE '[0-9]+' | awk '{ s += $1 } END { print s + 0 }'; }
pass=$(num pass); fail=$(num fail); skip=$(num skip); todo=$(num todo)
got_summaries=$(echo -n "$summaries" | grep -c 'total' || true)
if [ "$got_summaries" -lt "$expected_summaries" ]; then
  echo "[test] tap printed $got_summaries of $expected_summaries summaries (exit $tap_rc)"
  fail=$((fail + 1))
fi
if [ "$tap_rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
  echo "[test] tap exited $tap_rc without a counted failure"
  fail=1
fi
if [ "$typecheck_failed" -ne 0 ]; then
  echo "[test] type-check failed"
  fail=$((fail + 1))
fi
skip=$((skip + todo + mutations_skipped))
pass=$((pass + mutations_caught))
fail=$((fail + mutations_failed))
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
