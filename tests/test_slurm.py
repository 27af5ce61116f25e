"""The Slurm client: pure parsers on output captured from the testbed (Slurm 22.05.8,
tests/fixtures/slurm/), the argv it builds, batching, and the one job-state table."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.core.errors import OrchestratorError, SubmissionError
from orchestrator.slurm import parse
from orchestrator.slurm.client import JOB_STATES, JobState, SlurmClient
from orchestrator.slurm.states import category_of
from tests.fake_slurm import FakeSlurm, expand

FIXTURES = Path(__file__).parent / "fixtures" / "slurm"


def fixture(name: str) -> str:
    """A captured output without its first line (the `#` comment naming the command)."""
    return (FIXTURES / name).read_text().split("\n", 1)[1]


# --- parsers -----------------------------------------------------------------------------------
def test_sbatch_parsable() -> None:
    assert parse.parse_sbatch_parsable(fixture("sbatch_parsable.txt")) == "26"
    assert parse.parse_sbatch_parsable("123;lab\n") == "123"  # a multi-cluster site
    with pytest.raises(OrchestratorError, match="could not read a job id"):
        parse.parse_sbatch_parsable("sbatch: error: Batch job submission failed\n")


def test_sacct_jobs_skip_steps_fold_het_and_drop_reasons() -> None:
    jobs = parse.parse_job_lines(fixture("sacct_jobs.txt"))
    assert {j: s.state for j, s in jobs.items()} == {
        "26": "COMPLETED",
        "27": "FAILED",
        "28": "CANCELLED",
        "29": "TIMEOUT",
        "30": "CANCELLED",
        "31": "CANCELLED",
        "32": "NODE_FAIL",
        "33": "PENDING",
    }
    assert jobs["28"].name == "with space|pipe"  # the separator is \x1f, not |
    with_steps = parse.parse_job_lines(fixture("sacct_with_steps.txt"))
    assert set(with_steps) == {"26", "27", "28"} and with_steps["28"].state == "RUNNING"


def test_sacct_resized_job_takes_the_last_record() -> None:
    assert parse.parse_job_lines(fixture("sacct_resized.txt"))["57"].state == "FAILED"


def test_squeue_jobs() -> None:
    jobs = parse.parse_job_lines(fixture("squeue_jobs.txt"))
    assert {j: s.category for j, s in jobs.items()} == {
        "28": "active",
        "29": "active",
        "30": "queued",
        "31": "queued",
        "33": "queued",
    }


def test_het_components_fold_into_one_state() -> None:
    running_and_failed = "7+0\x1fFAILED\x1fa\n7+1\x1fRUNNING\x1fa\n"
    assert parse.parse_job_lines(running_and_failed)["7"].state == "RUNNING"
    ended = "7+0\x1fCOMPLETED\x1fa\n7+1\x1fOUT_OF_MEMORY\x1fa\n7.extern\x1fCOMPLETED\x1fextern\n"
    assert parse.parse_job_lines(ended)["7"].state == "OUT_OF_MEMORY"


def test_steps_and_hostnames() -> None:
    assert parse.parse_step_lines(fixture("squeue_steps.txt") + "squeue: warning\n") == [
        ("30.0", "stepA"),
        ("30.1", "stepB"),
        ("30.batch", "batch"),
    ]
    assert parse.parse_hostnames(fixture("scontrol_hostnames.txt")) == [
        "node1",
        "node2",
        "node3",
        "gpu01",
        "gpu02",
        "gpu07",
    ]
    assert expand("node[1-3],gpu[01-02,07]") == parse.parse_hostnames(
        fixture("scontrol_hostnames.txt")
    )  # the fake expands lists as scontrol does


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sinfo_drained.txt", {"node1": "IDLE", "node2": "IDLE", "node3": "DRAINED"}),
        ("sinfo_resumed.txt", {"node1": "IDLE", "node3": "IDLE"}),  # `idle*`: flag stripped
        ("sinfo_down.txt", {"node1": "COMPLETING", "node2": "DOWN", "node3": "COMPLETING"}),
    ],
)
def test_node_states(name: str, expected: dict[str, str]) -> None:
    assert parse.parse_node_states(fixture(name)) == expected


def test_node_failure_is_found_in_a_step_log() -> None:
    log = (
        "worker line\n" + fixture("srun_node_failure.txt") + "srun: error: Node failure on node2\n"
    )
    assert parse.failed_nodes_in_log(log) == ["node2"]


# --- the state table ---------------------------------------------------------------------------
ENDED_FAILED = (
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "PREEMPTED",
    "DEADLINE",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "REVOKED",
)


def test_every_slurm_job_state_has_a_category() -> None:
    documented = {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "COMPLETED",
        "SPECIAL_EXIT",
        *ENDED_FAILED,
    }
    assert set(JOB_STATES) == documented
    assert all(JOB_STATES[s] == "ended_failed" for s in ENDED_FAILED)
    assert category_of("CANCELLED by 1000") == "ended_failed"
    assert category_of("") == category_of("WHATEVER") == "unknown"
    assert JobState(job_id="1", state="RUNNING", category="active").live
    assert JobState(job_id="1", state="COMPLETED", category="ended_ok").ended
    assert not JobState(job_id="1").live and not JobState(job_id="1").ended


# --- the client against the fake ---------------------------------------------------------------
def test_sbatch_argv_job_id_and_cwd() -> None:
    slurm = FakeSlurm()
    client = SlurmClient(slurm)
    assert client.sbatch(["--output=/r/slurm-%j.out", "/r/job.sbatch"], cwd="/r") == "100"
    assert client.sbatch(["/r/job.sbatch"]) == "101"
    assert slurm.calls[0] == ("sbatch", "--parsable", "--output=/r/slurm-%j.out", "/r/job.sbatch")
    assert slurm.jobs["100"].cwd == "/r" and slurm.jobs["100"].state == "PENDING"


def test_sbatch_failure_is_a_submission_error_with_stderr() -> None:
    slurm = FakeSlurm()
    slurm.sbatch_error = "sbatch: error: invalid partition specified: gpu\n"
    with pytest.raises(SubmissionError, match="invalid partition specified: gpu") as info:
        SlurmClient(slurm).sbatch(["job.sbatch"])
    assert info.value.argv == ("sbatch", "--parsable", "job.sbatch")
    assert info.value.returncode == 1 and slurm.jobs == {}


def test_states_are_batched_one_squeue_one_sacct() -> None:
    slurm = FakeSlurm()
    client = SlurmClient(slurm)
    ids = [client.sbatch(["x"]) for _ in range(5)]
    slurm.set_state(ids[1], "RUNNING", nodes=["node1"])
    slurm.set_state(ids[2], "COMPLETED")
    slurm.set_state(ids[3], "NODE_FAIL")
    states = client.states([*ids, "999"])
    assert [c[0] for c in slurm.calls[5:]] == ["squeue", "sacct"]
    assert slurm.calls[-1][-1] == f"{ids[2]},{ids[3]},999"  # sacct only for what squeue lacks
    assert {j: s.category for j, s in states.items()} == {
        ids[0]: "queued",
        ids[1]: "active",
        ids[2]: "ended_ok",
        ids[3]: "ended_failed",
        ids[4]: "queued",
        "999": "unknown",
    }


def test_states_of_live_jobs_need_no_sacct() -> None:
    slurm = FakeSlurm()
    client = SlurmClient(slurm)
    job = client.sbatch(["x"])
    assert client.state(job).state == "PENDING"
    assert [c[0] for c in slurm.calls] == ["sbatch", "squeue"]
    assert client.states([]) == {} and len(slurm.calls) == 2


def test_cancel_argv() -> None:
    slurm = FakeSlurm()
    client = SlurmClient(slurm)
    job = client.sbatch(["x"])
    slurm.set_state(job, "RUNNING", nodes=["node1"])
    step = slurm.add_step(job, "decode-0")
    assert client.steps(job) == [(step, "decode-0")]
    client.cancel(job, signal="SIGTERM", steps=[step])
    client.cancel(job, signal="TERM", batch=True)
    assert slurm.signals == [(step, "TERM", False), (job, "TERM", True)]
    client.cancel(job)
    assert slurm.calls_to("scancel") == [
        ("scancel", "--signal=TERM", step),
        ("scancel", "--signal=TERM", "--batch", job),
        ("scancel", job),
    ]
    assert client.state(job).state == "CANCELLED" and client.steps(job) == []


def test_hostnames_and_node_states() -> None:
    slurm = FakeSlurm()
    client = SlurmClient(slurm)
    assert client.hostnames("node[1-3]") == ["node1", "node2", "node3"]
    slurm.set_node_state("node2", "down*")
    assert client.node_states(["node1", "node2"]) == {"node1": "IDLE", "node2": "DOWN"}
    assert client.node_states([]) == {}
    job = client.sbatch(["x"])
    slurm.set_state(job, "RUNNING", nodes=["node1", "node3"])
    assert client.job_nodes(job) == ["node1", "node3"]


def test_time_left_is_read_from_squeue_durations():
    """Rollover times its replacement from the seconds a job has left (`squeue %L`)."""
    left = parse.parse_time_left(fixture("squeue_time_left.txt"))
    assert left == {"647": 119.0, "648": 5399.0, "649": 172799.0, "650": 180.0}
    assert parse.parse_duration("UNLIMITED") is None
    assert parse.parse_duration("INVALID") is None
    assert parse.parse_duration("0:05") == 5.0


def test_time_left_asks_squeue_once_for_every_job():
    slurm = FakeSlurm()
    slurm.add_job("1", "RUNNING").time_left_s = 95
    slurm.add_job("2", "RUNNING").time_left_s = 90000
    slurm.add_job("3", "COMPLETED")
    left = SlurmClient(slurm).time_left(["1", "2", "1", "3"])
    assert left == {"1": 95.0, "2": 90000.0}  # an ended job has no time left to report
    assert slurm.calls_to("squeue") == [("squeue", "-h", "-j", "1,2,3", "-o", f"%i{parse.SEP}%L")]


def test_squeue_preemptions_are_read_from_real_output() -> None:
    """A preempted job shows PreemptTime and EndTime = PreemptTime + GraceTime (30 s); a
    running job only its EndTime, a pending one neither."""
    found = parse.parse_preemptions(fixture("squeue_preempt.txt"))
    assert list(found) == ["1238"]
    preemption = found["1238"]
    assert preemption.at == time.mktime((2026, 12, 7, 15, 39, 17, 0, 0, -1))
    assert preemption.ends_at == preemption.at + 30
    assert parse.parse_timestamp("N/A") is None and parse.parse_timestamp("Unknown") is None


def test_preemptions_ask_squeue_once_for_every_job() -> None:
    slurm = FakeSlurm()
    for job_id in ("5", "6"):
        slurm.add_job(job_id, "RUNNING")
    slurm.preempt("6", "2026-12-07T15:39:17", "2026-12-07T15:39:47")
    found = SlurmClient(slurm).preemptions(["5", "6", "7"])
    assert list(found) == ["6"] and found["6"].ends_at == found["6"].at + 30
    assert len(slurm.calls_to("squeue")) == 1
    assert SlurmClient(slurm).preemptions([]) == {}
