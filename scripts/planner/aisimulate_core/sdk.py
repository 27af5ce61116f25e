"""STAND-IN (see the package docstring): the names Dynamo's planner imports, unusable."""

from aisimulate_core import _Missing


class ForwardPassPerfModelConfig(_Missing):
    """Stand-in: raises ImportError when made."""


class RustForwardPassPerfModel(_Missing):
    """Stand-in: raises ImportError when made."""
