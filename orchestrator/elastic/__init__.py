"""A deployment that changes while it serves: worker jobs beside the run's own (made and
submitted by workerjobs, watched by jobwatch and, for placement=here, its subclass in rollover;
`ctl status` lines in attached; their record and store are rundir's), scaling up and down
(scale_up, scale_down, retire), a worker job told to stop by Slurm (hold), and the gate
before any old worker is released: the frontend routes to its replacement, role by role (handover). Driver plugins
here use runtime.hooks; the submitting side (scale_up) also uses the config schema and
validation, the plan builder, the engines and the launchers. Never imported by runtime."""
