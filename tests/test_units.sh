#!/bin/sh
# The systemd units pass systemd-analyze verify, and their exposure score is printed
# (README.md records it). Skipped where systemd-analyze is missing.
set -u
analyze=${SYSTEMD_ANALYZE:-$(command -v systemd-analyze)}
[ -n "$analyze" ] || { echo "no systemd-analyze: skipped"; exit 77; }
src=$(cd "${top_srcdir:-.}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The unit as installed, with ExecStart pointing at the daemon just built.
sed -e "s|@sbindir@|$(cd "${top_builddir:-.}/daemon" && pwd)|g" -e "s|@sysconfdir@|/etc|g" \
	"$src/systemd/moed.service.in" > "$tmp/moed.service"
cp "$src/systemd/moed.socket" "$tmp/"
(cd "$tmp" && "$analyze" verify --man=no moed.service moed.socket) > "$tmp/verify" 2>&1
status=$?
cat "$tmp/verify"
[ $status = 0 ] && [ ! -s "$tmp/verify" ] || { echo "FAIL: systemd-analyze verify"; exit 1; }
echo "systemd-analyze verify: moed.service and moed.socket are clean"
(cd "$tmp" && "$analyze" security --offline=true --no-pager moed.service 2>/dev/null) |
	grep -E "Overall exposure" || echo "(this systemd-analyze cannot score offline)"
# sysusers.d and tmpfiles.d entries parse.
if command -v systemd-sysusers >/dev/null; then
	systemd-sysusers --dry-run "$src/systemd/moed.sysusers" > "$tmp/sysusers" 2>&1 ||
		{ cat "$tmp/sysusers"; echo "FAIL: sysusers entry"; exit 1; }
	echo "sysusers entry parses"
fi
exit 0
