"""STAND-IN (see the package docstring): the names Dynamo's planner imports, unusable."""

from aisimulate_core.sdk import RustForwardPassPerfModel

__all__ = ["RustForwardPassPerfModel"]
