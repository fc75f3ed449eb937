#!/usr/bin/env bash
# Run the reliability suites against the real binary and collect the FIGURE lines their tests
# print (the numbers RELIABILITY.md quotes) into target/reliability-figures.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/reliability-figures.txt
cargo build --tests --quiet
: > "$out"
for suite in faults bad_input hygiene consistency; do
  cargo test --quiet --test it -- --nocapture --test-threads=2 "$suite::" 2>&1 | tee -a target/reliability-run.log | grep -o 'FIGURE .*' >> "$out" || { echo "suite $suite failed; see target/reliability-run.log"; exit 1; }
done
sort -o "$out" "$out"
cat "$out"
