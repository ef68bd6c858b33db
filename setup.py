"""nuqlab: grids, launcher, trainer and quantized-gradient kernels for low-bit data-parallel SGD research.

Each folder csrc/<name>/ becomes one torch extension `nuq._<name>`: its *.cpp files always (the CPU
build must always succeed), its *.cu files only where a CUDA toolkit and a CUDA build of torch exist.
Install with `pip install --no-build-isolation -e .` so the extension builds against the installed torch.
"""
import glob
import os

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
        cxx = ["-O3", "-fopenmp", "-march=x86-64-v2" if os.uname().machine == "x86_64" else "-O3"]
        if use_cuda and cu:
            exts.append(cpp_extension.CUDAExtension(
                f"nuq._{name}", cpp + cu, define_macros=[("NUQ_WITH_CUDA", "1")],
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math"]},
                extra_link_args=["-fopenmp"]))
        else:
            exts.append(cpp_extension.CppExtension(
                f"nuq._{name}", cpp, extra_compile_args=cxx, extra_link_args=["-fopenmp"]))
    return exts, {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


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
