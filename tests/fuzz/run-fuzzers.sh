#!/bin/sh
# Runs each libFuzzer target for a bounded time (MOED_FUZZ_SECONDS, default 20) from an
# empty corpus; any crash, leak or sanitizer report fails the test.
set -eu
secs=${MOED_FUZZ_SECONDS:-20}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
status=0
for f in fuzz_kwargs fuzz_job; do
	bin="${top_builddir:-.}/tests/fuzz/$f"
	[ -x "$bin" ] || { echo "$bin not built"; exit 99; }
	mkdir -p "$dir/$f"
	if "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$dir/" "$dir/$f" > "$dir/$f.log" 2>&1; then
		echo "$f: $(grep -m1 'stat::number_of_executed_units' "$dir/$f.log" | awk '{print $2}') runs, no failure"
	else
		echo "$f FAILED:"; tail -n 40 "$dir/$f.log"; status=1
		for a in "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-*; do
			[ -f "$a" ] && { echo "reproducer $a:"; od -An -tx1 "$a" | head -n 20; }
		done
	fi
done
exit $status
