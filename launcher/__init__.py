"""The `launch` command: expand grids, dispatch runs (dry-run, local, debug, SLURM), status, aggregation."""
