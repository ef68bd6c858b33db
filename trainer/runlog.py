"""The run's text log: every line to train.log (rank 0), and to the console unless a progress bar owns it.

On a terminal a tqdm bar shows progress and the periodic lines go only to train.log; without one
(SLURM logs) the periodic lines go to stderr too.
"""
from __future__ import annotations

import itertools
import logging
import os
import sys
from pathlib import Path

from trainer import runfiles
from trainer.dist import is_main

_ids = itertools.count()


class _TqdmHandler(logging.Handler):
    """Console lines that do not break a tqdm bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm
        tqdm.write(self.format(record), file=sys.stderr)


class RunLog:
    def __init__(self, run_dir: str | os.PathLike, tty: bool) -> None:
        self.tty = tty
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
        self._file = logging.getLogger(f"nuqlab.trainer.run{next(_ids)}")
        self._file.propagate = False
        self._file.setLevel(logging.INFO)
        self._console = logging.getLogger(f"{self._file.name}.console")
        self._console.setLevel(logging.INFO)  # propagates to the file logger
        self._handlers: list[logging.Handler] = []
        if is_main():
            self._add(self._file, logging.FileHandler(Path(run_dir) / runfiles.LOG, encoding="utf-8"), fmt)
        console = _TqdmHandler() if tty else logging.StreamHandler(sys.stderr)
        self._add(self._console, console, fmt)
        self._console.propagate = True

    def _add(self, logger: logging.Logger, handler: logging.Handler, fmt: logging.Formatter) -> None:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        self._handlers.append(handler)

    def info(self, msg: str) -> None:
        self._console.info(msg)

    def warning(self, msg: str) -> None:
        self._console.warning(msg)

    def progress(self, msg: str) -> None:
        """A periodic progress line: console only when no bar is shown."""
        (self._file if self.tty else self._console).info(msg)

    def file_only(self, msg: str) -> None:
        self._file.error(msg)

    def close(self) -> None:
        for handler in self._handlers:
            handler.close()
            for logger in (self._file, self._console):
                logger.removeHandler(handler)
