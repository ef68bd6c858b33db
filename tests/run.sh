#!/usr/bin/env bash
# Sets up nuqlab from scratch and runs the whole test suite (the README's test command; CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -r requirements.txt
python3 -m pip install -q --no-build-isolation -e .
python3 -m pytest -q tests "$@"
