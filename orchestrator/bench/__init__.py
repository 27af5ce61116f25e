"""Benchmarks against a ready deployment: what the benchmark step runs (spec: load points
and client command lines, pure), the step itself (step: an on_ready plugin of the driver) and one
normalized row per load point with the validity gate (normalize). Imports core, config, plan,
rundir, runtime, observe and the engine registry."""
