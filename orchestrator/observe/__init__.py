"""Looking at a run without changing it: what it really is against Slurm and its driver
(reconcile), what it ran on (fingerprint), its metrics (scrape, a driver plugin; prom, the
Prometheus text format) and its timeline as a picture (timeline_svg). Imports the layers below
(core, plan, slurm, rundir, runtime), never the launchers, ctl or sweeps."""
