#!/bin/sh
# test_install.sh - make install DESTDIR=<tmp> of this build, then checks
# what landed there:
#  - qtaud and qtau-agent in BINDIR, and qtaud's compiled-in agent-path
#    naming the installed qtau-agent;
#  - the units' ExecStart naming the installed qtaud (the .in templates
#    were filled in for this prefix);
#  - systemd-analyze verify on the installed units, with no message at all
#    (it only warns about an unknown key or section).  The units name their
#    final paths, which do not exist under DESTDIR, so verify runs on copies
#    whose ExecStart points into DESTDIR, and with MANPATH at the installed
#    pages so Documentation=man:qtaud(8) is checked against them.
#    Verified: syntax, keys and values, that ExecStart/ExecReload exist and
#    are executable, the socket's service, the man page.  Not verified: that
#    the user qtaud exists (useradd is the admin's step; systemd resolves
#    User= only at start), nor the sandbox at run time, which needs systemd
#    as PID 1 (tests/test_service plays systemd's part for sd_notify and
#    socket activation);
#  - the example config: every key of qtaud --help is in it, and with
#    every "# key = value" line uncommented qtaud accepts it.
set -eu
: "${QTAUD_BUILDDIR:?run through make check}"
MAKE=${MAKE:-make}
tmp=$(mktemp -d /tmp/qtaud-test-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/root
fail=0
say_fail() { echo "FAIL: $*"; fail=1; }

if ! $MAKE -C "$QTAUD_BUILDDIR" install DESTDIR="$dest" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"
    echo "FAIL: make install DESTDIR=$dest"
    exit 1
fi
find "$dest" -type f | sed "s|^$dest||" | sort

# The programs, found where the unit says; the unit tells BINDIR.
qtaud=$(find "$dest" -path '*/bin/qtaud' -type f)
if [ -z "$qtaud" ] || [ ! -x "$qtaud" ]; then
    echo "FAIL: no qtaud installed"
    exit 1
fi
bindir=$(dirname "${qtaud#"$dest"}")
[ -x "$dest$bindir/qtau-agent" ] || say_fail "no qtau-agent in $bindir"
agent_default=$("$qtaud" --help | sed -n 's/.*qtau-agent as SLURM nodes see it (default \(.*\)).*/\1/p')
[ "$agent_default" = "$bindir/qtau-agent" ] \
    || say_fail "qtaud's default agent-path '$agent_default' is not $bindir/qtau-agent"

# The example config.
example=$(find "$dest" -path '*/etc/qtaud/qtaud.conf.example' -type f)
if [ -z "$example" ]; then
    say_fail "no qtaud.conf.example installed"
else
    for key in $("$qtaud" --help | grep -o -- '--[a-z][a-z-]*' | sed 's/^--//' | sort -u); do
        case $key in config|help|version) continue ;; esac
        grep -q "^# $key = " "$example" || say_fail "key $key is not in $example"
    done
    sed -n 's/^# \([a-z][a-z-]*\) = /\1 = /p' "$example" >"$tmp/all.conf"
    [ -s "$tmp/all.conf" ] || say_fail "no '# key = value' lines in $example"
    "$qtaud" --config "$tmp/all.conf" --version >/dev/null 2>"$tmp/conf.err" \
        || { say_fail "qtaud refuses the example config uncommented:"; cat "$tmp/conf.err"; }
fi

sysunit=$(find "$dest" -path '*/system/qtaud.service' -type f)
userunit=$(find "$dest" -path '*/user/qtaud.service' -type f)
if [ -z "$sysunit$userunit" ]; then
    echo "units not installed (configured --with-systemd*unitdir=no): unit checks skipped"
    exit $fail
fi
mandir=$(dirname "$(dirname "$(find "$dest" -name qtaud.8 -type f)")")
mandir=${mandir#"$dest"}

for unit in $sysunit $userunit; do
    exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
    [ "$exe" = "$bindir/qtaud" ] || say_fail "$unit: ExecStart=$exe, not $bindir/qtaud"
    grep -q '@[a-zA-Z_]*@' "$unit" && say_fail "$unit: unsubstituted @...@ left"
done
# In a libsystemd build qtaud notifies, and only then may the units say so.
type=$(sed -n 's/^Type=//p' "${sysunit:-$userunit}")
if grep -q 'HAVE_LIBSYSTEMD 1' "$QTAUD_BUILDDIR/config.h"; then
    [ "$type" = notify ] || say_fail "built with libsystemd but Type=$type"
else
    [ "$type" = simple ] || say_fail "built without libsystemd but Type=$type"
fi

if ! command -v systemd-analyze >/dev/null; then
    echo "SKIP: systemd-analyze is not installed (package systemd): units not verified"
    [ $fail = 0 ] && exit 77
    exit 1
fi
# verify: quiet means good; a warning is as bad as an error
verify() {
    if ! "$@" >"$tmp/verify.out" 2>&1 || [ -s "$tmp/verify.out" ]; then
        say_fail "$*:"; cat "$tmp/verify.out"
    fi
}
to_dest() { sed "s|^ExecStart=$bindir/|ExecStart=$dest$bindir/|" "$1" >"$2"; }
mkdir -p "$tmp/system" "$tmp/user" "$tmp/xdg" "$tmp/home"
chmod 700 "$tmp/xdg"
if [ -n "$sysunit" ]; then
    to_dest "$sysunit" "$tmp/system/qtaud.service"
    cp "$(dirname "$sysunit")/qtaud.socket" "$tmp/system/"
    verify env MANPATH="$dest$mandir" systemd-analyze verify \
        "$tmp/system/qtaud.service" "$tmp/system/qtaud.socket"
    # the check is alive: a unit whose ExecStart is missing must fail it
    sed "s|^ExecStart=$bindir/|ExecStart=$tmp/missing/|" "$sysunit" >"$tmp/system/broken.service"
    if env MANPATH="$dest$mandir" systemd-analyze verify "$tmp/system/broken.service" \
        >/dev/null 2>&1; then
        say_fail "systemd-analyze verify passed a unit with a missing ExecStart"
    fi
fi
if [ -n "$userunit" ]; then
    to_dest "$userunit" "$tmp/user/qtaud.service"
    # a user manager of its own, which needs a runtime dir and a home
    verify env MANPATH="$dest$mandir" XDG_RUNTIME_DIR="$tmp/xdg" HOME="$tmp/home" \
        systemd-analyze --user verify "$tmp/user/qtaud.service"
fi
[ $fail = 0 ] && echo "installed units verified"
exit $fail
