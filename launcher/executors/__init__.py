"""Executors by --cluster name (base: the registry), each in its own module; see base.py."""
