#!/bin/sh
# test_man.sh - the man pages render without a warning (groff -ww, and
# man --warnings when man-db is there), and document every option: each
# flag of qtaud --help must appear in qtaud(8), each flag and variable of
# qtau-agent --help in qtau-agent(1), so an option added to conf.c without
# its page fails here.
set -eu
: "${QTAUD_SRCDIR:?run through make check}" "${QTAUD_BIN:?}" "${QTAU_AGENT_BIN:?}"
fail=0
out=$(mktemp /tmp/qtaud-test-man-XXXXXX)
trap 'rm -f "$out"' EXIT

if ! command -v groff >/dev/null; then
    echo "SKIP: groff is not installed (scripts/deps installs groff-base)"
    exit 77
fi
for page in "$QTAUD_SRCDIR/daemon/qtaud.8" "$QTAUD_SRCDIR/agent/qtau-agent.1"; do
    # -z: format but print nothing; -ww: every warning
    if ! groff -ww -z -man "$page" >"$out" 2>&1 || [ -s "$out" ]; then
        echo "FAIL: groff -ww -man $page:"; cat "$out"; fail=1
    fi
    if command -v man >/dev/null; then
        if ! MANWIDTH=80 man --warnings -l "$page" 2>"$out" >/dev/null || [ -s "$out" ]; then
            echo "FAIL: man --warnings -l $page:"; cat "$out"; fail=1
        fi
    fi
done

# Every word in $2 (flags, variables) must be in page $1 as roff writes it
# (a '-' is '\-' there).
documented() {
    page=$1
    shift
    for word in "$@"; do
        roff=$(printf '%s' "$word" | sed 's/-/\\\\-/g')
        if ! grep -q -- "$roff" "$page"; then
            echo "FAIL: $word is not documented in $page"; fail=1
        fi
    done
}
qtaud_flags=$("$QTAUD_BIN" --help | grep -o -- '--[a-z][a-z-]*' | sort -u)
agent_words=$("$QTAU_AGENT_BIN" --help | grep -o -e '--[a-z][a-z-]*' -e 'QTAU_[A-Z_]*' \
    | sort -u)
if [ -z "$qtaud_flags" ] || [ -z "$agent_words" ]; then
    echo "FAIL: no options in --help"
    exit 1
fi
# shellcheck disable=SC2086 # one word per option
documented "$QTAUD_SRCDIR/daemon/qtaud.8" $qtaud_flags
# shellcheck disable=SC2086
documented "$QTAUD_SRCDIR/agent/qtau-agent.1" $agent_words
echo "checked $(echo "$qtaud_flags" | wc -l) qtaud flags and $(echo "$agent_words" | wc -l) agent settings"
exit $fail
