#!/bin/sh
# The symbols libmoed.so exports are exactly the ones its version script names.
set -eu
lib="$top_builddir/libclient/.libs/libmoed.so"
map="$top_srcdir/libclient/libmoed.map"
[ -f "$lib" ] || { echo "no $lib (shared library disabled?)"; exit 77; }
expected=$(sed -n 's/^[[:space:]]*\(moed_[a-z0-9_]*\);.*/\1/p' "$map" | sort)
exported=$(${NM:-nm} -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ && $3 !~ /^MOED_/ {sub(/@.*/, "", $3); print $3}' | sort -u)
if [ "$expected" != "$exported" ]; then
	echo "exported symbols differ from $map:"
	printf '%s\n' "$expected" > expected.$$
	printf '%s\n' "$exported" > exported.$$
	diff -u expected.$$ exported.$$ || true
	rm -f expected.$$ exported.$$
	exit 1
fi
echo "libmoed.so exports the $(printf '%s\n' "$expected" | wc -l) symbols of its map"
