"""The run inside its allocation: the driver (driver: start every process, wait for real
readiness, watch, restart, tear down in order) and its entry point (entry: plan.json -> nodes ->
bound plan -> Driver with its plugins from frontends, elastic, observe and bench). Imports
everything the allocation needs, never Hydra (tested), the launchers' submit side, sweeps or ctl."""
