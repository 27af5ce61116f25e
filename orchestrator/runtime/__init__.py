"""Supervision inside the allocation, and only that: starting, watching and stopping the
plan's processes (processes, reaper), restart policy (restarts, attempts), readiness and health
(health, health_watch), the allocation's nodes and preflight checks (nodes, preflight), the model
fetched once and staged to node-local disk before the workers (fetch, stage, stage_step,
node_report), the driver's heartbeat, state.json's one writer (state), parsers of process logs (logscan), and the
narrow view of the driver its plugins get (hooks). Imports core, plan, slurm and rundir."""
