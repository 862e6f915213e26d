#!/usr/bin/env bash
# End-to-end checks of `specdec launch`: every rank gets SPECDEC_RANK / SPECDEC_WORLD_SIZE /
# one fresh SPECDEC_JOB_ID; rank 0's stdout passes through byte for byte and no other
# rank's does; stderr lines are prefixed "[rank R] "; a rank that exits 3 makes the launcher
# exit 3 naming it; a rank that kill -9s itself is named, the others are terminated after
# the grace period, nothing the ranks started survives and its /dev/shm segment is gone;
# SIGINT is forwarded; ranks die with a SIGKILLed launcher; a command that cannot run exits
# 127; bad -n and a launch under mpirun are usage errors (exit 2, one error line).
# Usage: test_launch.sh PATH/TO/specdec
set -u
bin="$1"
. "$(dirname "$0")/lib.sh"
gone() { # pids...: none alive (zombies count as gone), waiting up to 3 s for the kills to land
  local p s tries=0
  while [ $tries -lt 30 ]; do
    s=""
    for p in "$@"; do s="$s$(ps -o stat= -p "$p" 2>/dev/null | grep -v '^Z')"; done
    [ -z "$s" ] && return 0
    tries=$((tries + 1)); sleep 0.1
  done
  echo "still running: $(ps -o pid=,stat=,args= -p "$(echo "$@" | tr ' ' ,)")"
  return 1
}
wait_files() { # n, glob prefix: until n files $prefix* exist (at most 10 s)
  local i
  for i in $(seq 100); do [ "$(ls "$2"* 2>/dev/null | wc -l)" -ge "$1" ] && return 0; sleep 0.1; done
  return 1
}

# ---- environment -----------------------------------------------------------------------
"$bin" launch -n 3 -- sh -c 'echo "$SPECDEC_RANK $SPECDEC_WORLD_SIZE $SPECDEC_JOB_ID" > "$0/env.$SPECDEC_RANK"' "$tmp"
check "3 ranks exit 0" [ $? -eq 0 ]
check "rank r sees SPECDEC_RANK=r, SPECDEC_WORLD_SIZE=3" bash -c \
  "for r in 0 1 2; do read rank size job < '$tmp/env.'\$r && [ \$rank = \$r ] && [ \$size = 3 ] || exit 1; done"
jobs=$(cut -d' ' -f3 "$tmp"/env.* | sort -u)
check "one job id for all ranks, [A-Za-z0-9_-]{1,40}" bash -c \
  "[ \$(echo '$jobs' | wc -l) -eq 1 ] && echo '$jobs' | grep -Eq '^[A-Za-z0-9_-]{1,40}$'"
"$bin" launch -n 1 -- sh -c 'echo $SPECDEC_JOB_ID' > "$tmp/job2"
check "a second launch gets another job id" [ "$(cat "$tmp/job2")" != "$jobs" ]

# ---- stdout: rank 0 only, byte for byte ------------------------------------------------
head -c 300000 /dev/urandom > "$tmp/blob"
printf 'text\twith tabs\n\nand no final newline' >> "$tmp/blob"
"$bin" launch -n 3 -- sh -c '[ "$SPECDEC_RANK" = 0 ] && cat "$0" || echo "stdout of rank $SPECDEC_RANK"' \
  "$tmp/blob" > "$tmp/out" 2> "$tmp/err"
check "stdout is rank 0's, byte for byte" cmp -s "$tmp/blob" "$tmp/out"
check "other ranks' stdout is discarded" bash -c "! grep -aq 'stdout of rank' '$tmp/out' '$tmp/err'"

# ---- stderr: prefixed lines ----------------------------------------------------------------
"$bin" launch -n 2 -- sh -c 'printf "one %s\ntwo\npartial" $SPECDEC_RANK >&2' 2> "$tmp/err"
check "stderr lines prefixed per rank, partial last line flushed" bash -c \
  "for r in 0 1; do grep -qx \"\\[rank \$r\\] one \$r\" '$tmp/err' && grep -qx \"\\[rank \$r\\] two\" '$tmp/err' \
     && grep -qx \"\\[rank \$r\\] partial\" '$tmp/err' || exit 1; done && [ \$(wc -l < '$tmp/err') -eq 6 ]"

# ---- a rank exits 3 ----------------------------------------------------------------------
start=$(date +%s)
SPECDEC_LAUNCH_GRACE_MS=300 "$bin" launch -n 3 -- sh -c \
  'echo $$ > "$0/exit3.$SPECDEC_RANK"; [ $SPECDEC_RANK = 1 ] && exit 3; exec sleep 60' "$tmp" 2> "$tmp/err"
rc=$?
check "exit 3 -> launcher exits 3" [ $rc -eq 3 ]
check "names rank 1 and its code" grep -qx 'specdec launch: rank 1 exited with code 3' "$tmp/err"
check "the others are terminated after the grace period" [ $(($(date +%s) - start)) -lt 10 ]
check "no rank survives" gone $(cat "$tmp"/exit3.*)

# ---- a rank kill -9s itself ----------------------------------------------------------------
SPECDEC_LAUNCH_GRACE_MS=300 "$bin" launch -n 3 -- sh -c '
  touch "/dev/shm/specdec-$SPECDEC_JOB_ID-world"; echo "$SPECDEC_JOB_ID" > "$0/job"
  sleep 60 & echo "$$ $!" > "$0/kill9.$SPECDEC_RANK"
  if [ $SPECDEC_RANK = 2 ]; then
    for i in $(seq 100); do [ $(ls "$0"/kill9.* | wc -l) -ge 3 ] && break; sleep 0.1; done
    kill -9 $$
  fi
  wait' "$tmp" 2> "$tmp/err"
rc=$?
check "killed rank -> launcher exits 137" [ $rc -eq 137 ]
check "names rank 2 and signal 9" grep -q '^specdec launch: rank 2 killed by signal 9' "$tmp/err"
check "ranks and their children are gone" gone $(cat "$tmp"/kill9.*)
check "no /dev/shm segment of the job is left" bash -c "! ls /dev/shm/specdec-$(cat "$tmp/job")-* 2>/dev/null"

# ---- SIGINT is forwarded ------------------------------------------------------------------
# (a background job of a script ignores SIGINT: restore the default before exec)
python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
  "$bin" launch -n 2 -- sh -c 'trap "echo \$SPECDEC_RANK > \"$0/int.\$SPECDEC_RANK\"; exit 0" INT
    touch "$0/up.$SPECDEC_RANK"; sleep 60 & wait' "$tmp" 2> "$tmp/err" &
lpid=$!
wait_files 2 "$tmp/up."
kill -INT $lpid
wait $lpid
rc=$?
check "SIGINT reaches every rank" bash -c "[ -f '$tmp/int.0' ] && [ -f '$tmp/int.1' ]"
check "interrupted launch exits 130" [ $rc -eq 130 ]

# ---- ranks die with a SIGKILLed launcher ----------------------------------------------------
{ # (no "Killed" job notice)
  "$bin" launch -n 2 -- sh -c 'echo $$ > "$0/orphan.$SPECDEC_RANK"; exec sleep 60' "$tmp" &
  lpid=$!
  wait_files 2 "$tmp/orphan."
  kill -9 $lpid
  wait $lpid
} 2> /dev/null
check "no orphan ranks after the launcher is killed" gone $(cat "$tmp"/orphan.*)

# ---- a command that cannot run ------------------------------------------------------------
"$bin" launch -n 2 -- "$tmp/no-such-command" 2> "$tmp/err"
rc=$?
check "missing command -> 127, said per rank" bash -c \
  "[ $rc -eq 127 ] && grep -q \"^\\[rank 1\\] specdec launch: cannot run '$tmp/no-such-command'\" '$tmp/err'"

# ---- usage errors -----------------------------------------------------------------------------
for args in "-n 0 -- true" "-n -1 true" "-n 257 true" "-n abc true" "-n 2" "-n 2 --" "true" "-x 2 true"; do
  "$bin" launch $args > /dev/null 2> "$tmp/err"; rc=$?
  check "launch $args is a usage error" usage_error $rc "$tmp/err"
done
OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=0 "$bin" launch -n 2 -- true 2> "$tmp/err"; rc=$?
check "launch under mpirun is refused" bash -c "[ $rc -eq 2 ] && grep -q 'mpirun' '$tmp/err'"
if command -v mpirun > /dev/null; then
  mpirun --allow-run-as-root --oversubscribe -n 1 "$bin" launch -n 2 -- true > /dev/null 2> "$tmp/err"; rc=$?
  check "launch inside a real mpirun is refused" bash -c "[ $rc -eq 2 ] && grep -q 'run the command with mpirun directly' '$tmp/err'"
fi

finish test_launch
