"""Slurm, as data and as one client: pure parsers of its output (parse, states), the srun
and sbatch request shapes (request), the client behind the CommandRunner (client) and the step
wrapper that lets a step be stopped gracefully (stepwrap). Imports core and plan.model only."""
