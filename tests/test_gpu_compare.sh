#!/bin/sh
# tools/gpu-compare without a GPU: the usage errors a user can make are refused with a
# message, and each set's rows, forced kernel and environment reach its benchmark (a
# stand-in that prints what it was given) in every pass, in the order asked. Also
# gpu-compare-prepare's usage errors, the scripts' shared recorder, and gpu-round's choice
# of tarball.
set -u
src=$(cd "${top_srcdir:-.}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/repo/.gpu/bin" "$tmp/repo/tools"
cp "$src/tools/gpu-compare" "$src/tools/gpu-sysroot" "$tmp/repo/tools/"
cat > "$tmp/repo/.gpu/bin/bench-fake" <<'FAKE'
#!/bin/sh
echo "given: $* | X=${MOED_X:-none} | rows=${MOED_BENCH_ONLY:-all}"
FAKE
chmod +x "$tmp/repo/.gpu/bin/bench-fake"
fail() { echo "FAIL: $*"; exit 1; }
# The sysroot is taken as set up (nothing to unpack here).
compare() { (cd "$tmp/repo" && MOED_GPU_SYSROOT=$tmp/none OUT=$tmp/out sh tools/gpu-compare "$@"); }

refused() { # $1: what stderr must say; then the command, which must exit 2
	want=$1
	shift
	"$@" > "$tmp/stdout" 2> "$tmp/stderr"
	rc=$?
	[ $rc = 2 ] || { cat "$tmp/stderr"; fail "$* exited $rc, not 2"; }
	grep -qF -- "$want" "$tmp/stderr" || { cat "$tmp/stderr"; fail "$*: no '$want'"; }
	echo "refused: $* ($want)"
}
refused "usage: tools/gpu-compare" compare
refused "usage: tools/gpu-compare" compare -p
refused "usage: tools/gpu-compare" compare -x fake
refused "no .gpu/bin/bench-missing" compare missing
refused "no .gpu/bin/bench-missing" compare fake missing:mma16,MOED_X=1
refused "no .gpu/moed-absent.tar.gz" compare -t absent fake

compare -p 2 -r 7 -o Qwen3-30B-A3B:1,Mixtral-8x7B:4 fake fake:mma16,MOED_X=3 -o "" fake,MOED_X=1 \
	> "$tmp/stdout" 2>&1 || { cat "$tmp/stdout"; fail "gpu-compare with a stand-in benchmark"; }
grep '^given:' "$tmp/stdout" > "$tmp/given"
cat > "$tmp/want" <<'WANT'
given: 7 | X=none | rows=Qwen3-30B-A3B:1,Mixtral-8x7B:4
given: 7 mma16 | X=3 | rows=Qwen3-30B-A3B:1,Mixtral-8x7B:4
given: 7 | X=1 | rows=all
given: 7 | X=none | rows=Qwen3-30B-A3B:1,Mixtral-8x7B:4
given: 7 mma16 | X=3 | rows=Qwen3-30B-A3B:1,Mixtral-8x7B:4
given: 7 | X=1 | rows=all
WANT
diff "$tmp/want" "$tmp/given" || fail "the sets did not reach the benchmark as asked"
tar tzf "$tmp/out/logs.tar.gz" | grep -q 'logs/bench-fake-2.log' || fail "no log of pass 2 in the archive"
echo "gpu-compare: 6 sets in 2 passes reached the benchmark as asked, their logs archived"

# tools/gpu-compare-prepare's usage errors, refused before it builds or fetches anything.
mkdir -p "$tmp/notrepo"
prepare() { (cd "$tmp/notrepo" && sh "$src/tools/gpu-compare-prepare" "$@"); }
refused "usage: tools/gpu-compare-prepare NAME" prepare
refused "usage: tools/gpu-compare-prepare NAME" prepare a b c
refused "NAME takes letters" prepare "a/b"
refused "run it from the repository root" prepare fine
[ ! -e "$tmp/notrepo/.gpu" ] || fail "gpu-compare-prepare made .gpu before refusing"

# The scripts' shared recorder (tools/gpu-sysroot): under set -e, a failing command's
# status and output are kept, and the caller goes on.
(set -eu
 MOED_GPU_SYSROOT=$tmp/none . "$src/tools/gpu-sysroot"
 gpu_record "$tmp/failing" sh -c 'echo out; echo err >&2; exit 3'
 gpu_record "$tmp/passing" true
 echo reached > "$tmp/reached") || fail "gpu_record ended its caller"
if [ "$(cat "$tmp/failing.rc")" != 3 ] || [ "$(cat "$tmp/passing.rc")" != 0 ] || [ ! -f "$tmp/reached" ]; then
	fail "gpu_record: statuses $(cat "$tmp/failing.rc" "$tmp/passing.rc" 2>&1 | tr '\n' ' ')"
fi
if ! grep -q '^out$' "$tmp/failing.log" || ! grep -q '^err$' "$tmp/failing.log"; then
	fail "gpu_record lost the output"
fi
echo "gpu_record: a failing command's status (3) and output kept, its caller went on"

# tools/gpu-round's choice of tarball: the only one in .gpu, or the one named; it refuses
# to guess among several, and a wrong MOED_GPU_ROUND_TESTS, before it builds anything.
cp "$src/tools/gpu-round" "$tmp/repo/tools/"
round() { # its environment's VAR=V words
	(cd "$tmp/repo" && env MOED_GPU_SYSROOT="$tmp/none" OUT="$tmp/round" "$@" sh tools/gpu-round)
}
refused "no .gpu/moed-*.tar.gz" round
: > "$tmp/repo/.gpu/moed-a.tar.gz"
: > "$tmp/repo/.gpu/moed-b.tar.gz"
refused "several tarballs in .gpu" round
refused "no tarball .gpu/moed-c.tar.gz" round MOED_GPU_ROUND_TARBALL=.gpu/moed-c.tar.gz
refused "MOED_GPU_ROUND_TESTS=no: wants 0 (the suite left out) or 1" round MOED_GPU_ROUND_TESTS=no
