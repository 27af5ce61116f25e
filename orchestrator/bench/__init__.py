"""Benchmarks against a ready deployment: what the benchmark step runs (spec: load points
and client command lines, pure), the step itself (step: an on_ready plugin of the driver) and one
normalized row per load point with the validity gate (normalize); accuracy points (evals:
lm-evaluation-harness, a row per task and metric, the min_accuracy gate). Imports core, config, plan,
rundir, runtime, observe and the engine registry."""
