"""Shell text: the small quoting helpers every generated script is built from (shell,
imported by the launchers) and, above the launchers and frontends, the dry-run description of a
launch request (dryrun). Imports plan.model and slurm.request; dryrun also launchers and
frontends."""
