#!/bin/sh
# The Python package (python/moed) against two daemons on private sockets, the second
# withholding no_combine and router_weight_on_input. Skipped (77) where the interpreter
# configure found lacks numpy.
set -u
python=${PYTHON:-python3}
if ! "$python" -c "import numpy" 2>/dev/null; then
	echo "SKIP: $python cannot import numpy (tools/install-deps installs python3-numpy)"
	exit 77
fi
lib="${top_builddir:-.}/libclient/.libs/libmoed.so.0"
if ldd "$lib" 2>/dev/null | grep -q -E 'lib(a|t|ub)san'; then
	echo "SKIP: $lib is built with sanitizers; an uninstrumented $python cannot load it"
	exit 77
fi
moed="${top_builddir:-.}/daemon/moed"
tmp=$(mktemp -d)
pids=
trap 'kill $pids 2>/dev/null; rm -rf "$tmp"' EXIT
for name in main withheld; do
	extra=
	[ $name = withheld ] && extra="--withhold no_combine --withhold router_weight_on_input"
	"$moed" --socket "$tmp/$name.sock" --backend cpu --threads 2 --spin-us 50 --log-level error $extra &
	pids="$pids $!"
done
for i in $(seq 200); do [ -S "$tmp/main.sock" ] && [ -S "$tmp/withheld.sock" ] && break; sleep 0.05; done
PYTHONDONTWRITEBYTECODE=1 MOED_LIBRARY="$lib" \
PYTHONPATH="${top_srcdir:-.}/python${PYTHONPATH:+:$PYTHONPATH}" \
MOED_TEST_SOCKET="$tmp/main.sock" MOED_TEST_SOCKET_WITHHELD="$tmp/withheld.sock" \
	timeout 600 "$python" "${top_srcdir:-.}/tests/python/test_moed.py"
