"""The in-step stop wrapper: every srun step runs its command under a few lines of plain bash
that turn the driver's stop signal into a SIGTERM to the command's leader process alone.

Why: SGLang (0.5.21, `tokenizer_manager.py` SignalHandler.sigterm_handler) drains and exits 0 on a
SIGTERM to its server process, but when every process of its tree gets one, the scheduler
children die first, its SubprocessWatchdog (`utils/watchdog.py`) raises SIGQUIT ("It usually
means one child failed"), it sleeps 5 s for crash dumps and kills its tree with SIGKILL
(`kill_process_tree`): a stop that reads as a crash (issue 26). What `scancel --signal=SIG
JOB.STEP` reaches depends on the site's ProctrackType (Slurm 22.05 `proctrack_p_signal`):
proctrack/pgid signals the step's whole process group and proctrack/linuxproc its whole tree;
proctrack/cgroup signals the step's tasks (children of slurmstepd) only, and everything for
SIGKILL. So the driver never sends the stop as SIGTERM: it sends STOP_SIGNAL, whose default
action is "ignore", and only the wrapper (a task on every plugin) acts on it.

SIGWINCH because nothing on our steps uses it: SGLang, Dynamo, sglang-router/SMG (Rust, tokio
handles SIGINT/SIGTERM), Python and etcd/NATS (Go: caught, no action) leave it alone. SIGURG
would not do: the Go runtime preempts goroutines with it.

What the wrapper does (bash only: it runs inside the engine's container, where nothing of ours
is installed):
- starts the command with SIGINT and SIGQUIT back to their defaults (bash starts background
  commands with them ignored) and keeps its stdout/stderr, the step's log;
- STOP_SIGNAL -> SIGTERM to the leader; a SIGTERM or SIGINT from Slurm itself (job cancel,
  time limit, preemption; on proctrack/cgroup it reaches only the wrapper) is passed on as is;
- waits again after each trapped signal (`wait` returns 128+N when a trap interrupts it), so it
  reaps the leader and exits with the leader's exit status (128+N when a signal killed it, the
  code srun reports for a task killed by signal N as well).

The holding wrapper (`wrap(..., hold=True)`: the steps of a frontend.placement=here run's worker
jobs, WorkerJobPlan.hold_s > 0) keeps the FIRST SIGTERM from Slurm from the leader and says so in
the step's log; a second one is passed on. Why: a preempting Slurm 22.05 SIGTERMs every step at
the start of the partition's GraceTime and the batch shell nothing (measured on the testbed), so
passed on at once the workers would leave the frontend before the run's replacement serves. The
run's driver sees the preemption in Slurm (squeue PreemptTime, orchestrator.elastic.rollover),
replaces the job and drains it the usual way (STOP_SIGNAL, still passed on at once). When the
grace ends Slurm sends SIGTERM again (passed on), then SIGKILL KillWait later. The cost: a plain
`scancel` of such a job (one SIGTERM, then SIGKILL KillWait later) no longer drains its workers.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

STOP_SIGNAL = signal.SIGWINCH

# One line per statement, joined with "; " so that the dry-run shows one readable argument.
# `sig` says whether a trap ran during the last `wait`; `fwd` passes a signal to the leader.
# `wait 2>/dev/null`: bash's own job notice ("line 1: 123 Killed  ( trap ...") stays out of the
# step's log; the driver reports the exit status itself.
WRAPPER_LINES = (
    'fwd() { sig=1; kill -s "$1" "$pid" 2>/dev/null; }',
    '(trap - INT QUIT; exec "$@") & pid=$!',
    f'trap "fwd TERM" {STOP_SIGNAL.name.removeprefix("SIG")} TERM',
    'trap "fwd INT" INT',
    'while sig=0; wait "$pid" 2>/dev/null; rc=$?; [ "$sig" = 1 ]; do :; done',
    'exit "$rc"',
)
WRAPPER = "; ".join(WRAPPER_LINES)
# The holding wrapper: `hold` keeps the first SIGTERM (not the driver's STOP_SIGNAL) from the
# leader and passes on a second.
HOLD_MESSAGE = (
    "stop wrapper: SIGTERM from Slurm kept from the command (preemption: the run replaces this "
    "job, then drains it); a second SIGTERM is passed on"
)
HOLDING_WRAPPER_LINES = (
    WRAPPER_LINES[0],
    f'hold() {{ sig=1; if [ -n "${{held:-}}" ]; then fwd TERM; else held=1; echo "{HOLD_MESSAGE}" >&2; fi; }}',
    WRAPPER_LINES[1],
    f'trap "fwd TERM" {STOP_SIGNAL.name.removeprefix("SIG")}',
    "trap hold TERM",
    *WRAPPER_LINES[3:],
)
HOLDING_WRAPPER = "; ".join(HOLDING_WRAPPER_LINES)


def wrap(argv: Sequence[str], name: str, *, hold: bool = False) -> list[str]:
    """`bash -c WRAPPER NAME ARGV...`: run `argv` under the stop wrapper (the holding one when
    `hold`); `name` becomes the wrapper's `$0` (what ps and bash's own messages show)."""
    return ["bash", "-c", HOLDING_WRAPPER if hold else WRAPPER, name, *argv]


def scancel_signal(sig: signal.Signals) -> str:
    """The `scancel --signal=` value for what the driver means by `sig`: a graceful stop
    (SIGTERM) becomes STOP_SIGNAL, by number, because scancel 22.05 knows only some names
    ("Unknown job signal: WINCH"); the driver runs on the cluster, so this is its number there.
    Any other signal (SIGKILL) goes to the whole step as it is."""
    if sig == signal.SIGTERM:
        return str(int(STOP_SIGNAL))
    return sig.name.removeprefix("SIG")
