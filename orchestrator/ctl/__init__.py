"""`python -m orchestrator.ctl`: one module per subcommand (status, logs, stop, scale,
watch with watch_view, ls, report, diff; see registers the viewing ones) behind one parser (cli).
The top layer: may import anything below, and nothing imports it."""
