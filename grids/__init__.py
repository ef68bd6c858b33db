"""Experiment grid families: each module is a family, each registered function a run."""
