#!/usr/bin/env bash
# examples/param_sweep.sh - a parameter sweep through a live qtaud, with
# nothing but curl and jq on the client side.
#
# Each task integrates f(x) = x^a * exp(-b*x) over [0, 1] with Simpson's
# rule (an awk program), for a = 0..24 and b = 0..19: 500 tasks of real
# arithmetic, each writing one result line (a, b, steps, integral, error
# estimate) to OUTDIR/results/.  Five more tasks get invalid parameters on
# purpose and exit 3, so the run shows how failures come back: state FAILED,
# error_msg "exit status 3", the task's stderr, and a metrics row each.
#
# The tasks are submitted as arrays, waited for with the long poll
# GET /v1/tasks/{id}?wait=30, and summed up from the task objects and the
# metrics CSV, which is saved as OUTDIR/metrics.csv.
#
# Usage: examples/param_sweep.sh [OUTDIR]
#   OUTDIR         where results go (default ./sweep-YYYYmmdd-HHMMSS); the
#                  tasks write into it, so it must be on the host (or a file
#                  system shared with the hosts) where the pilot runs them
# Environment:
#   QTAUD_URL      daemon URL (default http://127.0.0.1:8750)
#   QTAUD_TOKEN    qtaud's bearer token (default: the contents of
#                  QTAUD_TOKEN_FILE, itself by default var/token of this
#                  checkout, where scripts/run keeps its state)
#   QTAUD_PILOT    pilot to run on (default local)
#   SWEEP_STEPS    Simpson intervals per task (default 100000, even)
#   SWEEP_BATCH    tasks per POST (default 100)

set -uo pipefail
export LC_ALL=C

url=${QTAUD_URL:-http://127.0.0.1:8750}
url=${url%/}
pilot=${QTAUD_PILOT:-local}
steps=${SWEEP_STEPS:-100000}
batch=${SWEEP_BATCH:-100}
outdir=${1:-./sweep-$(date +%Y%m%d-%H%M%S)}

token_file=${QTAUD_TOKEN_FILE:-$(cd "$(dirname "$0")/.." && pwd)/var/token}
if [[ -z ${QTAUD_TOKEN:-} && -r $token_file ]]; then
    QTAUD_TOKEN=$(head -n1 "$token_file")
fi
auth=()
[[ -n ${QTAUD_TOKEN:-} ]] && auth=(-H "Authorization: Bearer $QTAUD_TOKEN")

die() {
    printf 'param_sweep: %s\n' "$*" >&2
    exit 1
}

for tool in curl jq awk; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done
[[ $steps =~ ^[0-9]+$ ]] || die "SWEEP_STEPS must be a whole number"
[[ $batch =~ ^[1-9][0-9]*$ ]] || die "SWEEP_BATCH must be a positive number"

mkdir -p "$outdir/results" || die "cannot create $outdir"
outdir=$(cd "$outdir" && pwd) # tasks run elsewhere: give them absolute paths
awk_bin=$(command -v awk)
work=$(mktemp -d "${TMPDIR:-/tmp}/param_sweep.XXXXXX")
trap 'rm -rf "$work"' EXIT

# api METHOD PATH [curl args...]: sets http_code ("000": no answer) and
# leaves the body in $work/body.
api() {
    local method=$1 path=$2
    shift 2
    http_code=$(curl -sS -o "$work/body" -w '%{http_code}' --max-time 60 \
        -X "$method" "${auth[@]}" "$@" "$url$path") || http_code=000
}

api GET /v1/health
[[ $http_code == 200 ]] ||
    die "no qtaud at $url (GET /v1/health: HTTP $http_code); set QTAUD_URL"
api GET "/v1/pilots/$pilot"
[[ $http_code != 401 ]] ||
    die "qtaud at $url wants its token: set QTAUD_TOKEN or QTAUD_TOKEN_FILE (its state-dir/token)"

# ---------------------------------------------------------------- the task

# The program every task runs.  Invalid parameters exit 3 with a message on
# stderr, which is what a user would want to find in the task's stderr.
cat >"$outdir/integrate.awk" <<'AWK'
# integrate.awk - Simpson's rule for f(x) = x^a * exp(-b*x) on [0, 1].
# Usage: awk -v a=A -v b=B -v n=STEPS -f integrate.awk   (run in OUTDIR)
# Writes "a b n integral error_estimate" to results/a<A>_b<B>.txt, where the
# error estimate is Richardson's (S(n) - S(n/2)) / 15.
function f(x) {
    if (x == 0)
        return a == 0 ? 1 : 0
    return x ^ a * exp(-b * x)
}
function simpson(m,    h, s, i) {
    h = 1 / m
    s = f(0) + f(1)
    for (i = 1; i < m; i++)
        s += (i % 2 ? 4 : 2) * f(i * h)
    return s * h / 3
}
BEGIN {
    if (a !~ /^-?[0-9]+$/ || b !~ /^-?[0-9.]+$/ || n !~ /^-?[0-9]+$/) {
        print "usage: awk -v a=INT -v b=NUM -v n=EVEN -f integrate.awk" > "/dev/stderr"
        exit 3
    }
    if (a < 0) {
        printf "invalid parameter a=%s: x^a is not integrable at 0\n", a > "/dev/stderr"
        exit 3
    }
    if (n < 4 || n % 4 != 0) {
        printf "invalid parameter n=%s: need a multiple of 4 (Simpson on n and n/2)\n", n > "/dev/stderr"
        exit 3
    }
    fine = simpson(n)
    coarse = simpson(n / 2)
    out = sprintf("results/a%d_b%s.txt", a, b)
    printf "%d\t%s\t%d\t%.15g\t%.3g\n", a, b, n, fine, (fine - coarse) / 15 > out
    close(out)
}
AWK

# ---------------------------------------------------------------- submit

# All task descriptions, built by jq: the 25 x 20 grid, then the five
# deliberately invalid ones.
jq -n --arg awk "$awk_bin" --arg prog "$outdir/integrate.awk" \
    --arg cwd "$outdir" --arg pilot "$pilot" --argjson n "$steps" '
    def task($a; $b; $n): {
        name: "sweep a=\($a) b=\($b) n=\($n)",
        command: [$awk, "-v", "a=\($a)", "-v", "b=\($b)", "-v", "n=\($n)", "-f", $prog],
        cwd: $cwd,
        pilot: $pilot
    };
    [ (range(0; 25) as $a | range(0; 20) as $b | task($a; $b; $n)),
      task(-1; 1; $n), task(-3; 0; $n),     # singular at 0
      task(2; 1; 0), task(2; 1; 6),         # bad step counts
      task(2; 1; -8) ]' >"$work/tasks.json" || die "jq failed to build the tasks"
total=$(jq length "$work/tasks.json")

echo "param_sweep: $total tasks to $url (pilot $pilot), results in $outdir"
t_start=$EPOCHREALTIME
: >"$work/ids"
for ((i = 0; i < total; i += batch)); do
    jq -c ".[$i:$((i + batch))]" "$work/tasks.json" >"$work/chunk.json"
    api POST /v1/tasks -H 'Content-Type: application/json' --data-binary "@$work/chunk.json"
    if [[ $http_code != 201 ]]; then
        die "POST /v1/tasks (tasks $i..) answered HTTP $http_code: $(head -c 500 "$work/body")"
    fi
    jq -r '.ids[]' "$work/body" >>"$work/ids" || die "no ids in: $(head -c 500 "$work/body")"
done
t_submitted=$EPOCHREALTIME
echo "param_sweep: submitted $(wc -l <"$work/ids") tasks in" \
    "$(awk -v a="$t_start" -v b="$t_submitted" 'BEGIN { printf "%.2f", b - a }') s"

# ---------------------------------------------------------------- wait

# Long-poll every task until it is terminal.  One curl process takes a
# chunk of ids over one keep-alive connection; each answer comes back as
# soon as its task has ended, so the loop waits about as long as the sweep
# runs.  A poll that times out leaves its id for the next round.
: >"$work/ended.jsonl"
mapfile -t waiting <"$work/ids"
while ((${#waiting[@]} > 0)); do
    still=()
    for ((i = 0; i < ${#waiting[@]}; i += 50)); do
        urls=()
        for id in "${waiting[@]:i:50}"; do
            urls+=("$url/v1/tasks/$id?wait=30")
        done
        curl -sS --max-time 60 "${auth[@]}" "${urls[@]}" >"$work/polled" ||
            echo "param_sweep: some long polls failed; retrying them" >&2
        jq -c 'select(.state == "SUCCESS" or .state == "FAILED" or .state == "CANCELED")' \
            "$work/polled" >>"$work/ended.jsonl" 2>/dev/null
        # Whatever did not come back terminal (or did not come back) waits on.
        mapfile -t -O "${#still[@]}" still < <(
            printf '%s\n' "${waiting[@]:i:50}" |
                grep -vxF -f <(jq -r 'select(.state == "SUCCESS" or .state == "FAILED"
                                      or .state == "CANCELED") | .id' "$work/polled" 2>/dev/null) -
        )
        if [[ -t 1 ]]; then
            printf '\rparam_sweep: %d of %d ended' "$(wc -l <"$work/ended.jsonl")" "$total"
        fi
    done
    if ((${#still[@]} == ${#waiting[@]})); then
        # No progress in a whole round: is the daemon still there?
        api GET /v1/health
        [[ $http_code == 200 ]] ||
            die "qtaud stopped answering (HTTP $http_code) with ${#still[@]} tasks not ended"
        sleep 0.2 # a long poll that came back early must not spin
    fi
    waiting=("${still[@]}")
done
t_end=$EPOCHREALTIME
[[ -t 1 ]] && echo
echo "param_sweep: all $(wc -l <"$work/ended.jsonl") tasks ended"

# ---------------------------------------------------------------- report

api GET /v1/metrics.csv
if [[ $http_code == 200 ]]; then
    cp "$work/body" "$outdir/metrics.csv"
else
    echo "param_sweep: GET /v1/metrics.csv answered HTTP $http_code" >&2
fi

# Sum execution_secs over this sweep's rows.  The CSV is RFC 4180: a quoted
# field may hold commas, quotes ("") and newlines, so records are joined
# until their quotes balance before they are split.
exec_total=$(awk -v ids="$work/ids" '
    function split_csv(s, f,    n, i, c, field, inq) {
        if (index(s, "\"") == 0)
            return split(s, f, ",")
        n = 0; field = ""; inq = 0
        for (i = 1; i <= length(s); i++) {
            c = substr(s, i, 1)
            if (inq) {
                if (c != "\"") field = field c
                else if (substr(s, i + 1, 1) == "\"") { field = field c; i++ }
                else inq = 0
            } else if (c == "\"") inq = 1
            else if (c == ",") { f[++n] = field; field = "" }
            else field = field c
        }
        f[++n] = field
        return n
    }
    BEGIN { while ((getline line < ids) > 0) want[line] = 1 }
    {
        sub(/\r$/, "")
        rec = joining ? rec "\n" $0 : $0
        tmp = rec
        if (gsub(/"/, "", tmp) % 2) { joining = 1; next }
        joining = 0
        n = split_csv(rec, f)
        if (!header_seen) {
            for (i = 1; i <= n; i++) col[f[i]] = i
            header_seen = 1
            next
        }
        if (f[col["task_id"]] in want) { sum += f[col["execution_secs"]]; rows++ }
    }
    END { printf "%.3f %d\n", sum, rows }' "$outdir/metrics.csv" 2>/dev/null)
read -r exec_secs metric_rows <<<"${exec_total:-0 0}"

# All results in one table, sorted by a then b.
{
    printf 'a\tb\tsteps\tintegral\terror_estimate\n'
    cat "$outdir"/results/a*_b*.txt 2>/dev/null | sort -n -k1,1 -k2,2
} >"$outdir/results.tsv"

wall=$(awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "%.2f", b - a }')
echo
echo "== summary =="
echo "tasks by state:"
jq -rs 'group_by(.state)[] | "  \(.[0].state)\t\(length)"' "$work/ended.jsonl"
echo "failed tasks:"
jq -r 'select(.state != "SUCCESS") | [.id, .name, .error_msg] | @tsv' "$work/ended.jsonl" |
    while IFS=$'\t' read -r id name error_msg; do
        printf '  task %s (%s): %s\n' "$id" "$name" "${error_msg:-no error_msg}"
        api GET "/v1/tasks/$id/stderr"
        if [[ $http_code == 200 && -s $work/body ]]; then
            printf '    stderr: %s\n' "$(head -n 1 "$work/body")"
        fi
    done
echo "results:       $(($(wc -l <"$outdir/results.tsv") - 1)) files, in $outdir/results.tsv"
awk -F'\t' 'NR > 1 { e = $5 < 0 ? -$5 : $5 + 0; if (e > max) max = e }
            END { if (NR > 1) printf "largest |error estimate|: %.3g\n", max }' \
    "$outdir/results.tsv"
echo "wall time:     $wall s (first POST to last task ended)"
if ((metric_rows > 0)); then
    echo "total time:    $exec_secs s of task execution over $metric_rows metrics rows" \
        "($(awk -v e="$exec_secs" -v w="$wall" 'BEGIN { printf "%.2f", e / w }') x the wall time)"
fi
[[ -s $outdir/metrics.csv ]] && echo "metrics:       $outdir/metrics.csv"
exit 0
