"""`python -m trainer --config DIR/config.yaml`: train the run of that folder from a shell or a SLURM job.

Exit codes: 0 done (or already done), 1 the run failed (status.json says why, traceback in train.log),
2 the config file is missing or unreadable, 3 interrupted by SIGUSR2/SIGTERM after saving a checkpoint
(run the same command again to resume), 4 another live trainer holds the run folder (nothing was written).
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Sequence

from trainer.runfiles import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK, EXIT_USAGE, read_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="the run's config.yaml; its folder is the run folder")
    args = parser.parse_args(argv)
    try:
        config = read_config(args.config)
    except ValueError as err:
        print(f"trainer: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    from trainer import loop, runlock
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: loop.request_stop())
    run_dir = args.config.resolve().parent
    try:
        results = loop.run(config, run_dir)
    except runlock.RunLocked as err:
        print(f"trainer: error: {err}", file=sys.stderr)
        return EXIT_LOCKED
    except loop.Interrupted as err:
        print(f"trainer: interrupted: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("trainer: cancelled (KeyboardInterrupt); status.json says failed", file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:
        print(f"trainer: failed: {type(err).__name__}: {err} (traceback in {run_dir / 'train.log'})", file=sys.stderr)
        return EXIT_FAILED
    print(f"trainer: {results['status']}: best Vacc {results['best']['Vacc']}, final "
          f"{ {k: results['final'][k] for k in ('Vacc', 'Vloss') if k in results['final']} }")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
