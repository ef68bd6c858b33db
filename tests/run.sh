#!/usr/bin/env bash
# Sets up nuqlab from scratch and runs the whole test suite (the README's test command; CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -r requirements.txt
python3 -m pip install -q --no-build-isolation -e .
# The SLURM integration tests need a real cluster: start the single-node one as root, stop it on exit.
# As root on Debian, also the aarch64 cross compiler for tests/test_cross_compile.py (no aarch64 CI runner).
# As root the cross compiler is required: tests/test_cross_compile.py fails instead of skipping without it.
if [ "$(id -u)" = 0 ]; then
    bash scripts/slurm_cluster.sh start
    trap 'bash scripts/slurm_cluster.sh stop' EXIT
    if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null 2>&1 ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null; }
    fi
    export NUQLAB_REQUIRE_CROSS_COMPILER=1
fi
python3 -m pytest -q tests "$@"
