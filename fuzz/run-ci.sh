#!/usr/bin/env bash
# Runs every cargo-fuzz target of emdb for FUZZ_SECONDS seconds each
# (default 60) and fails on the first crash, panic, leak, timeout or
# out-of-memory. Installs cargo-fuzz if it is missing.
#
#   bash fuzz/run-ci.sh                      # decode, recover, ops: 60 s each
#   FUZZ_SECONDS=600 FUZZ_TARGETS=ops bash fuzz/run-ci.sh
#
# Environment:
#   FUZZ_SECONDS  seconds per target (default 60)
#   FUZZ_TARGETS  space-separated targets (default "decode recover ops")
#   FUZZ_TMPDIR   where the recover and ops targets create their databases
#                 (default: a fresh directory on /dev/shm when it is
#                 writable, which runs them ~7x faster than a disk; the
#                 cargo tests cover the disk)
#
# The toolchain is stable: cargo-fuzz passes nightly-only flags to rustc
# (-Zsanitizer=address), which RUSTC_BOOTSTRAP=1 lets stable rustc accept.
# A crash leaves its input in fuzz/artifacts/<target>/; see fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")"

secs=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"decode recover ops"}
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

made_tmp=""
if [ -z "${FUZZ_TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  FUZZ_TMPDIR=$(mktemp -d /dev/shm/emdb-fuzz.XXXXXX)
  made_tmp=$FUZZ_TMPDIR
fi
FUZZ_TMPDIR=${FUZZ_TMPDIR:-${TMPDIR:-/tmp}}
cleanup() { if [ -n "$made_tmp" ]; then rm -rf "$made_tmp"; fi; }
trap cleanup EXIT

echo "== cargo fuzz build (release, debug assertions, AddressSanitizer)"
start=$SECONDS
cargo fuzz build
echo "build took $((SECONDS - start)) s"

summary=()
for t in $targets; do
  case $t in
    # Long inputs from the start: each byte is one operation or argument.
    ops) extra=(-len_control=0 -max_len=1024) ;;
    *) extra=() ;;
  esac
  mkdir -p "corpus/$t"
  log=$(mktemp)
  echo "== cargo fuzz run $t for $secs s (scratch in $FUZZ_TMPDIR)"
  start=$SECONDS
  set +e
  TMPDIR=$FUZZ_TMPDIR cargo fuzz run "$t" -- \
    -max_total_time="$secs" -timeout=60 -print_final_stats=1 "${extra[@]}" 2>&1 | tee "$log" |
    grep -E '^#[0-9]+[[:space:]]+(pulse|DONE)|^stat::|panicked|ERROR|SUMMARY|Done [0-9]+ runs|artifact|Reproduce|cargo fuzz run'
  rc=${PIPESTATUS[0]}
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(sed -n 's/^#[0-9]*[[:space:]]*DONE.*cov: \([0-9]*\).*/\1/p' "$log" | tail -1)
  rm -f "$log"
  if [ "$rc" -ne 0 ]; then
    echo "FAILED: fuzz target $t exited with $rc; the input is in fuzz/artifacts/$t/ (see fuzz/README.md to replay it)"
    exit 1
  fi
  summary+=("$t: ${runs:-?} runs in $((SECONDS - start)) s, ${rate:-?} exec/s, coverage ${cov:-?}")
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
echo "fuzz: ${#summary[@]} target(s) ran without a crash"
