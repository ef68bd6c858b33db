"""`python -m launcher ...` is the `launch` command."""
import sys

from launcher.cli import main

sys.exit(main())
