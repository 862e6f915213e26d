#!/usr/bin/env python3
"""The hang harness under injected faults: `specdec hangtest` run segment after segment, each
a few thousand speculative steps long with one random fault (SPECDEC_FAULT) in it, until the
steps of all segments reach --steps (default 100,000), under `specdec launch` and/or mpirun.

Per segment: a random rank gets a random fault — stall (sleeps at its N-th collective),
crash (SIGKILL at its N-th collective), corrupt (a wrong token at step N of a generation) or
delay (1-3 ms before every collective: must still finish). N is drawn so the fault lands
after a few thousand steps (collectives per step are measured by the first segment). The
injecting rank logs "fault injection: ..." at the moment it acts; every stderr line is
stamped on arrival. A segment passes when:
  - the job ends with the fault's exit code (3 timeout, 5 a rank died — 128 + 9 from launch
    or mpirun's own code for a killed rank under mpirun —, 4 divergence; 0 for delay);
  - a line names the fault and the faulty rank: "rank(s) R had not arrived" / "SD_ERR_PEER_LOST
    ... rank R" / "rank R killed by signal 9" / "ranks disagree on the tokens of step N";
  - that line came within SPECDEC_COMM_TIMEOUT_MS + 2 s of the injection;
  - no rank is left running and no /dev/shm/specdec-* segment is left behind.
Prints one line per segment and a summary; --report FILE appends a markdown table. Exit 0 when
every segment passed, 1 otherwise.

usage: hang_faults.py SPECDEC [--steps 100000] [--launchers launch,mpirun] [--ranks 2]
                      [--timeout-ms 3000] [--seed 1] [--report FILE]
"""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time

KINDS = ("stall", "crash", "corrupt", "delay")


def shm_segments():
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith("specdec-")}
    except FileNotFoundError:
        return set()


def left_behind(new):
    """Of segments that appeared during a run, those still there a second later that a
    launcher made (job id "<pid>-<time>-<random>" in hex) which is gone. Other jobs on the
    machine (tests name theirs "t<pid>-...") make and unlink their own meanwhile."""
    time.sleep(1)
    out = []
    for name in sorted(new & shm_segments()):
        m = re.match(r"specdec-([0-9a-f]+)-[0-9a-f]+-[0-9a-f]{8}-", name)  # launch's job ids
        if m and not os.path.exists(f"/proc/{int(m.group(1), 16)}"):
            out.append(name)
    return out


def run_segment(cmd, env, limit_s):
    """Runs cmd; returns (exit code or None after limit_s, [(t, line)] of stderr stamped on
    arrival, stdout, t_start)."""
    lines, out = [], []
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)

    def pump_err():
        for raw in iter(p.stderr.readline, b""):
            lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip("\n")))

    def pump_out():
        out.append(p.stdout.read())

    readers = [threading.Thread(target=f, daemon=True) for f in (pump_err, pump_out)]
    for t in readers:
        t.start()
    try:
        rc = p.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.wait()
        rc = None
    for t in readers:
        t.join(10)
    return rc, lines, b"".join(out).decode("utf-8", "replace"), t0


def first(lines, pattern):
    rx = re.compile(pattern)
    for t, line in lines:
        if rx.search(line):
            return t, line
    return None, None


def expectation(kind, rank, ranks, launcher, corrupt_step):
    """(exit codes, detection pattern naming the rank) for a fault."""
    other = [r for r in range(ranks) if r != rank]
    if kind == "stall":
        return {3}, rf"SD_ERR_COMM_TIMEOUT.*rank\(s\) ({rank}\b|[0-9, ]*\b{rank}\b)"
    if kind == "crash":
        if launcher == "mpirun":
            return {137, 9, 1, 5}, (rf"process rank {rank} .*(signal 9|Killed)|rank {rank} .*"
                                    rf"(killed|signal 9|exited)|SD_ERR_PEER_LOST.*rank {rank}\b")
        return {5, 137}, rf"SD_ERR_PEER_LOST.*rank {rank}\b|rank {rank} killed by signal 9"
    if kind == "corrupt":
        return {4}, rf"SD_ERR_RANK_DIVERGENCE: ranks disagree on the tokens of step {corrupt_step}\b"
    return {0}, r" steps in .*: ok$"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specdec")
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--launchers", default="launch,mpirun")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--timeout-ms", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    env0 = dict(os.environ, SPECDEC_COMM_TIMEOUT_MS=str(args.timeout_ms), SPECDEC_LOG="warn",
                SPECDEC_LAUNCH_GRACE_MS="2000", OMPI_ALLOW_RUN_AS_ROOT="1",
                OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    env0.pop("SPECDEC_FAULT", None)
    deadline_s = args.timeout_ms / 1000.0 + 2.0
    launchers = [x for x in args.launchers.split(",") if x]
    rows, failures = [], 0
    for launcher in launchers:
        if launcher == "mpirun":
            probe = subprocess.run([args.specdec, "hangtest", "--ranks", "1", "--steps", "1",
                                    "--comm", "mpi"], capture_output=True, env=env0)
            if not shutil.which("mpirun") or probe.returncode != 0:
                print("skip: mpirun or the mpi backend is missing: the mpirun segments did not run")
                continue
        done, seg, ops_per_step = 0, 0, None
        while done < args.steps:
            seg += 1
            kind = rng.choice(KINDS) if seg > 1 else "stall"  # the first one measures ops/step
            rank = rng.randrange(args.ranks)
            length = rng.randint(2000, 5000)
            corrupt_step = None
            if kind == "stall" or kind == "crash":
                at = rng.randint(length // 2, length)  # the step it should land near
                op = at * (ops_per_step or 10)
                fault = f"{kind}:rank={rank}:op={op}"
                steps = length + 100000  # the fault ends it
            elif kind == "corrupt":
                corrupt_step = rng.randint(1, 40)  # steps of one generation (256 tokens at most)
                fault = f"corrupt:rank={rank}:step={corrupt_step}"
                steps = length
            else:
                fault = f"delay:rank={rank}:ms={rng.randint(1, 3)}"
                steps = rng.randint(500, 1500)
            seed = rng.randrange(1 << 62)
            hang = ["hangtest", "--ranks", str(args.ranks), "--steps", str(steps), "--seed", str(seed)]
            if launcher == "mpirun":
                cmd = ["mpirun", "--oversubscribe", "-n", str(args.ranks), "-x", "SPECDEC_FAULT",
                       "-x", "SPECDEC_COMM_TIMEOUT_MS", "-x", "SPECDEC_LOG", args.specdec] + hang + ["--comm", "mpi"]
            else:
                cmd = [args.specdec] + hang
            env = dict(env0, SPECDEC_FAULT=fault)
            shm_before = shm_segments()
            rc, lines, out, t0 = run_segment(cmd, env, limit_s=600)
            codes, pattern = expectation(kind, rank, args.ranks, launcher, corrupt_step)
            t_inj, _ = first(lines, r"fault injection: rank \d+ (stalls|crashes|corrupts)")
            t_det, det_line = first(lines, pattern) if kind != "delay" else (None, None)
            status_rx = {"stall": "SD_ERR_COMM_TIMEOUT", "crash": "SD_ERR_PEER_LOST|killed by signal 9|signal 9",
                         "corrupt": "SD_ERR_RANK_DIVERGENCE"}.get(kind)
            t_any, any_line = first(lines, status_rx) if status_rx else (None, None)
            m = re.search(r"failed after (\d+) steps", "\n".join(l for _, l in lines))
            m_ok = re.search(r": (\d+) steps in ", out)
            seg_steps = int(m.group(1)) if m else int(m_ok.group(1)) if m_ok else 0
            if kind == "stall" and ops_per_step is None and seg_steps > 0:
                ops_per_step = max(1, round(op / seg_steps))
            problems = []
            if rc is None:
                problems.append("did not end within 600 s: a hang")
            elif rc not in codes:
                problems.append(f"exit {rc}, expected {sorted(codes)}")
            latency = None
            if kind == "delay":
                if not m_ok:
                    problems.append("did not complete")
            else:
                if t_inj is None:
                    problems.append("the fault never fired")
                if det_line is None:
                    seen = f" (detected {t_any - t_inj:.2f} s after the injection: {any_line[:120]!r})" \
                        if t_any is not None and t_inj is not None else ""
                    problems.append(f"no line names the fault and rank {rank}{seen}")
                if t_inj is not None and t_det is not None:
                    latency = t_det - t_inj
                    if latency > deadline_s:
                        problems.append(f"named {latency:.2f} s after the injection (> {deadline_s:.1f} s)")
            time.sleep(0.3)
            left = subprocess.run(["pgrep", "-f", f"hangtest --ranks {args.ranks} --steps {steps} --seed {seed}"],
                                  capture_output=True).stdout.strip()
            if left:
                problems.append("ranks left running: " + left.decode().replace("\n", " "))
                subprocess.run(["pkill", "-9", "-f", f"--seed {seed}"], check=False)
            leaked = left_behind(shm_segments() - shm_before)
            if leaked:
                problems.append(f"/dev/shm left: {sorted(leaked)}")
            done += seg_steps
            status = "ok" if not problems else "FAIL: " + "; ".join(problems)
            failures += bool(problems)
            lat = f"{latency:.3f}" if latency is not None else "-"
            print(f"{launcher} #{seg} {fault}: exit {rc}, {seg_steps} steps (total {done}), "
                  f"named after {lat} s: {status}", flush=True)
            if problems:
                for t, l in lines[-8:]:
                    print(f"    {t - t0:8.3f} {l}")
            rows.append((launcher, seg, fault, rc, seg_steps, lat, det_line or "", status))
        print(f"{launcher}: {seg} segments, {done} steps, ops/step ~{ops_per_step}", flush=True)
    summary = []
    for launcher in launchers:
        for kind in KINDS:
            rs = [r for r in rows if r[0] == launcher and r[2].startswith(kind)]
            if not rs:
                continue
            lats = [float(r[5]) for r in rs if r[5] != "-"]
            ok = sum(1 for r in rs if r[7] == "ok")
            worst = f"{max(lats):.3f}" if lats else "-"
            summary.append((launcher, kind, len(rs), ok, sum(r[4] for r in rs), worst))
            print(f"  {launcher} {kind}: {ok}/{len(rs)} passed, {sum(r[4] for r in rs)} steps, "
                  f"slowest naming {worst} s")
    if args.report:
        with open(args.report, "a") as f:
            f.write("| launcher | fault | segments | passed | steps | slowest naming (s) |\n")
            f.write("|---|---|---|---|---|---|\n")
            for r in summary:
                f.write(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} |\n")
            f.write("\n")
            f.write("| launcher | # | fault | exit | steps | named after (s) | naming line | result |\n")
            f.write("|---|---|---|---|---|---|---|---|\n")
            for r in rows:
                line = r[6].replace("|", "\\|")[:150]
                f.write(f"| {r[0]} | {r[1]} | `{r[2]}` | {r[3]} | {r[4]} | {r[5]} | `{line}` | {r[7]} |\n")
    n_fault = sum(1 for r in rows if not r[2].startswith("delay"))
    print(f"hang_faults: {len(rows)} segments ({n_fault} with a fault), "
          f"{failures} failed; deadline + 2 s = {deadline_s:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
