"""The plan, the contract between the submitting side and the in-allocation driver: its
data types and pure helpers (model, placeholders, ports, placement, groups, restart, preflight,
fetch, stage, consistency import only config.schema and core) and the steps that build it from a
validated config with the registries' help (build, sharing: they also import engines, frontends
and bench.spec)."""
