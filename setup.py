"""nuqlab: grids, launcher, trainer and quantized-gradient kernels for low-bit data-parallel SGD research.

Each folder csrc/<name>/ becomes one torch extension `nuq._<name>`: its *.cpp files always (the CPU
build must always succeed), its *.cu files only where a CUDA toolkit and a CUDA build of torch exist.
Install with `pip install --no-build-isolation -e .` so the extension builds against the installed torch.
Build cost (bench/bench_build.py): the extensions build side by side, each with ninja over its files, with
no debug info (-g0); only the files that bind to Python include torch/extension.h.
"""
import copy
import glob
import os
import sys
import time

from setuptools import find_packages, setup

PACKAGES = ["grids", "launcher", "trainer", "nuq", "estim"]


def extensions():
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # metadata-only builds (e.g. `pip download`) need no extension
        return [], {}
    use_cuda = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None \
        and os.environ.get("NUQ_NO_CUDA", "0") != "1"
    exts = []
    for folder in sorted(glob.glob("csrc/*/")):
        name = os.path.basename(os.path.normpath(folder))
        cpp = sorted(glob.glob(os.path.join(folder, "*.cpp")))
        cu = sorted(glob.glob(os.path.join(folder, "*.cu")))
        if not cpp:
            continue
        # -g0: Python's CFLAGS carry -g, and debug info for torch's headers was ~15% of the compile time
        cxx = ["-O3", "-g0", "-fopenmp", "-march=x86-64-v2" if os.uname().machine == "x86_64" else "-O3"]
        if use_cuda and cu:
            exts.append(cpp_extension.CUDAExtension(
                f"nuq._{name}", cpp + cu, define_macros=[("NUQ_WITH_CUDA", "1")],
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math"]},
                extra_link_args=["-fopenmp"]))
        else:
            exts.append(cpp_extension.CppExtension(
                f"nuq._{name}", cpp, extra_compile_args=cxx, extra_link_args=["-fopenmp"]))
    return exts, {"build_ext": _build_command(cpp_extension.BuildExtension)}


def _build_command(base: type) -> type:
    """torch's BuildExtension (ninja), building the extensions in parallel threads and saying so."""

    class BuildSideBySide(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, use_ninja=True, **kwargs)

        def finalize_options(self):
            super().finalize_options()
            if not self.parallel:  # `-j N` wins; ninja runs each extension's files on all cores anyway
                self.parallel = max(1, len(self.extensions or []))

        def build_extensions(self):
            files = sum(len(e.sources) for e in self.extensions)
            print(f"nuqlab: compiling {files} C++ files for {', '.join(e.name for e in self.extensions)} "
                  f"(about 1 min on 2 cores; pip shows the compiler's output only with -v)",
                  file=sys.stderr, flush=True)
            start = time.perf_counter()
            super().build_extensions()
            print(f"nuqlab: extensions built in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

        def build_extension(self, ext):
            # each extension gets its own temp folder: torch writes one build.ninja per folder, and two
            # extensions building at once would overwrite each other's
            mine = copy.copy(self)
            mine.build_temp = os.path.join(self.build_temp, ext.name)
            base.build_extension(mine, ext)

    return BuildSideBySide


ext_modules, cmdclass = extensions()

setup(
    name="nuqlab",
    version="0.1.0",
    description="Experiment grids, SLURM launcher, trainer and kernels for quantized data-parallel SGD",
    python_requires=">=3.10",
    packages=[p for p in find_packages(include=[f"{p}*" for p in PACKAGES])],
    install_requires=[
        "torch==2.13.0", "submitit", "pyyaml", "scipy", "tensorboardX", "pandas", "pybind11",
        "tqdm", "matplotlib", "scikit-learn",
    ],
    entry_points={"console_scripts": ["launch = launcher.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
