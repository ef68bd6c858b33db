"""The CPU extension on aarch64: the AVX-512 and AVX2 kernel files compile to nothing off x86, and the file
holding the generic kernel and the dispatch compiles against torch's headers. Checked with a cross compiler
(Debian: `apt-get install g++-aarch64-linux-gnu`) since no aarch64 machine runs the suite; skipped where none
is installed, except under tests/run.sh as root (CI), which installs it and sets
NUQLAB_REQUIRE_CROSS_COMPILER=1: there a missing compiler fails the tests."""
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CXX = shutil.which("aarch64-linux-gnu-g++")
REQUIRED = os.environ.get("NUQLAB_REQUIRE_CROSS_COMPILER") == "1"
pytestmark = pytest.mark.skipif(CXX is None and not REQUIRED,
                                reason="no aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu)")


@pytest.fixture(autouse=True)
def _compiler_present():
    if CXX is None:  # only reached when REQUIRED
        pytest.fail("tests/run.sh runs as root but aarch64-linux-gnu-g++ is missing "
                    "(apt-get install g++-aarch64-linux-gnu failed)", pytrace=False)


FLAGS = ["-std=c++20", "-O3", "-fopenmp", "-Wall", "-Werror"]


@pytest.mark.parametrize("name", ["quant_cpu_avx2.cpp", "quant_cpu_avx512.cpp", "group_cpu_avx2.cpp",
                                  "group_cpu_avx512.cpp"])
def test_x86_kernels_compile_to_nothing_on_aarch64(tmp_path, name):
    obj = tmp_path / "k.o"
    subprocess.run([CXX, *FLAGS, "-c", str(ROOT / "csrc" / "quant" / name), "-o", str(obj)], check=True,
                   capture_output=True, text=True, timeout=120)
    symbols = subprocess.run(["aarch64-linux-gnu-nm", "--defined-only", str(obj)], check=True, capture_output=True,
                             text=True).stdout.split("\n")
    assert [s for s in symbols if s.strip() and " T " in s] == []


def test_generic_kernel_and_dispatch_compile_against_torch_on_aarch64():
    from torch.utils import cpp_extension
    includes = [f"-I{p}" for p in cpp_extension.include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    # the files with x86-conditional code (~1 min each, side by side); the others hold none
    files = [ROOT / "csrc" / "quant" / name for name in ("quant_cpu.cpp", "group.cpp", "group_cpu.cpp")]
    procs = [subprocess.Popen([CXX, *FLAGS, "-Wno-error", "-fsyntax-only", *includes, "-DTORCH_EXTENSION_NAME=_x",
                               "-DTORCH_API_INCLUDE_EXTENSION_H", str(f)], stderr=subprocess.PIPE, text=True)
             for f in files]
    errors = {f.name: p.communicate(timeout=600)[1] for f, p in zip(files, procs)}
    failed = {f.name: errors[f.name] for f, p in zip(files, procs) if p.returncode != 0}
    assert not failed, failed  # (torch's headers are architecture-independent; pyconfig.h is the host's)
