#!/bin/sh
# moed's command line: --help, --version, and every bad value refused with a message
# naming the option (exit 2); start-up failures (exit 1) say what failed.
set -u
moed="${top_builddir:-.}/daemon/moed"
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
pid=
fails=0

expect() { # expected-status expected-words args...
	want=$1 words=$2
	shift 2
	timeout 20 "$moed" "$@" > "$tmp/out" 2>&1  # a daemon that starts by mistake must not hang us
	got=$?
	if [ "$got" != "$want" ] || ! grep -qF -- "$words" "$tmp/out"; then
		echo "FAIL: moed $* -> status $got (want $want), output:"
		sed 's/^/    /' "$tmp/out"
		echo "    (expected to contain: $words)"
		fails=$((fails + 1))
	else
		echo "ok: moed $*"
	fi
}

expect 0 "Usage: moed [OPTION]..." --help
expect 0 "moed 0." --version
expect 2 "--threads=0: expected a number of threads from 1 to 256" --threads 0
expect 2 "--threads=many: expected a number of threads" --threads many
expect 2 "--sq-entries=48: expected a power of two from 2 to 32768" --sq-entries 48
expect 2 "--arena-max=12Q: expected a size such as 4096, 64M or 2G" --arena-max 12Q
expect 2 "--arena-max=2T: arenas are at most 1T" --arena-max 2T
expect 2 "arena-default is larger than arena-max" --arena-default 2G --arena-max 1G
expect 2 "--backend=rocm: unknown backend (auto, cpu or hip)" --backend rocm
expect 2 "--withhold=fp8: expected no_combine or router_weight_on_input" --withhold fp8
expect 2 "--log-level=loud: expected error, warning, info or debug" --log-level loud
expect 2 "--allow-user=no-such-user-here: no such user" --allow-user no-such-user-here
expect 2 "--spin-us=-1: expected microseconds from 0 to 1000000" --spin-us -1
expect 2 "unexpected argument 'extra'" extra
expect 2 "option '--no-such-option' is unknown or lacks its value" --no-such-option
expect 2 "Try 'moed --help'." --threads
MOED_MODULE_DIR=$tmp/no-modules expect 1 "backend hip: GPU backend unavailable: cannot load $tmp/no-modules/moed-hip.so" --backend hip --socket "$tmp/x.sock"
expect 1 "cannot listen on $tmp/missing/moed.sock" --socket "$tmp/missing/moed.sock"

# The settings file: each mistake stops the start with the file and line.
printf '%s\n' "threads = 2" "# a comment" "" "spin-us = fast" > "$tmp/bad.conf"
expect 2 "$tmp/bad.conf:4: spin-us = fast: expected microseconds from 0 to 1000000" --config "$tmp/bad.conf"
printf '%s\n' "colour = blue" > "$tmp/bad.conf"
expect 2 "$tmp/bad.conf:1: unknown setting 'colour'" --config "$tmp/bad.conf"
printf '%s\n' "threads 4" > "$tmp/bad.conf"
expect 2 "$tmp/bad.conf:1: expected NAME = VALUE, got 'threads 4'" --config "$tmp/bad.conf"
expect 2 "cannot read $tmp/none.conf: No such file or directory" --config "$tmp/none.conf"
printf '%s\n' "arena-max = 1G" "arena-default = 2G" > "$tmp/bad.conf"
expect 2 "arena-default is larger than arena-max" --config "$tmp/bad.conf"

# A second daemon on a live socket refuses to steal it; a stale socket file is reused.
"$moed" --socket "$tmp/moed.sock" --log-level error &
pid=$!
for i in $(seq 100); do [ -S "$tmp/moed.sock" ] && break; sleep 0.05; done
expect 1 "another daemon is listening on $tmp/moed.sock" --socket "$tmp/moed.sock"
kill -TERM $pid; wait $pid; status=$?
if [ $status != 0 ]; then echo "FAIL: SIGTERM exit status $status"; fails=$((fails + 1)); fi
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.bind(sys.argv[1])" "$tmp/stale.sock" 2>/dev/null ||
	: > "$tmp/stale.sock"
"$moed" --socket "$tmp/stale.sock" --log-level error &
pid=$!
for i in $(seq 100); do [ -S "$tmp/stale.sock" ] && break; sleep 0.05; done
sleep 0.2
if kill -0 $pid 2>/dev/null; then echo "ok: a stale socket file is replaced"; else
	echo "FAIL: moed did not start over a stale socket"; fails=$((fails + 1)); fi
kill -TERM $pid; wait $pid
pid=

[ $fails = 0 ] && echo "all command-line checks passed"
exit $((fails > 0))
