"""Configuration: the typed schema every config group fills (schema), Hydra composition
(load, the only importer of Hydra), the value domains of keys (domains); then, above the registries,
whole-config validation (validate: every problem at once, each with key, value and fix) and the rules
of frontend.placement=here and serve.* (serve). schema, load and domains import only core; validate
and serve also the engines, frontends, launchers, bench specs and the plan."""
