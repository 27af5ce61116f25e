"""STAND-IN for NVIDIA's `aisimulate_core` (not the real package), installed by
`scripts/install.sh --with-planner` into .venvs/planner only.

Dynamo 1.6.1's planner imports `aisimulate_core.sdk` at module level in every mode
(dynamo/planner/core/perf_model/ais_adapter.py, engine_query.py), but uses it only for
optimization_target=sla. The real package cannot be installed from PyPI (`aisimulate` there is
a stub that downloads from NVIDIA's own index), so this stand-in makes the import succeed and
raises ImportError the moment the performance model is used. The orchestrator refuses
optimization_target=sla while `STAND_IN` is set. On a cluster with NVIDIA's index, install the
real aisimulate into the planner's venv instead.
"""

STAND_IN = True


class _Missing:
    """Any use of the performance model fails as if the package were absent."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise ImportError(
            "aisimulate_core here is the orchestrator's stand-in: install NVIDIA's aisimulate"
        )

    def __class_getitem__(cls, item: object) -> type:
        return cls

    @classmethod
    def normalize_config(cls, *args: object) -> None:
        raise ImportError(
            "aisimulate_core here is the orchestrator's stand-in: install NVIDIA's aisimulate"
        )
