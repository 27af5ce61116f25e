"""The lowest layer: the error hierarchy (errors), side effects behind small interfaces
(effects: commands, HTTP, the clock; their fakes live in tests/fakes.py) and where helper tools are
found (tools). Imports nothing of the orchestrator."""
