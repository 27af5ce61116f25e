"""Disaggregated LLM serving (prefill + decode workers behind a frontend) on Slurm GPU clusters."""

__version__ = "0.1.0"
