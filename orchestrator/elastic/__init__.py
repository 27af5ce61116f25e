"""A deployment that changes while it serves: worker jobs beside the run's own
(workerjobs, attached, attached_watch), scaling up and down (scale_up, scale_down, retire),
rolling worker jobs over (rollover) and a worker job told to stop by Slurm (hold). Driver plugins
here use runtime.hooks; the submitting side (scale_up) also uses api, the plan builder and the
launchers. Never imported by runtime."""
