"""SLURM: the `--cluster slurm` executor (executor.py), what each array task runs (task.py), squeue/sacct/scancel (query.py)."""
