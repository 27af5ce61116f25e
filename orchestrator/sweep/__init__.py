"""Deployment sweeps: the points of a sweep (points: expansion with Hydra's override
grammar, names), one Slurm job per point with throttling (run), the sweep directory's manifest and
per-point status (sweepdir) and the collected results (collect: results tables, Pareto plot,
decision table). Imports api, launch and the layers below; never ctl."""
