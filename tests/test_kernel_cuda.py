"""The CUDA kernel. Device tests run only where a GPU and a CUDA build of nuq._quant exist (they are the
GPU-machine half of the kernel tests; the CPU half is tests/test_kernel.py). The compile checks run on any
machine with nvcc and are skipped only where nvcc is absent."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from nuq import kernel
from nuq.levels import get_method

SRC = Path(__file__).resolve().parents[1] / "csrc" / "quant"
NVCC = shutil.which("nvcc")


def _cuda_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        from nuq import _quant
    except ImportError:
        return False
    return bool(_quant.has_cuda())


needs_gpu = pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA GPU and nuq._quant built with CUDA")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")


@needs_nvcc
@pytest.mark.parametrize("source", ["quant_cuda.cu", "group_cuda.cu"])
def test_cuda_source_compiles_with_nvcc(source, tmp_path):
    """The .cu files (torch-free by design) compile with the local nvcc using the build's flags."""
    out = tmp_path / "kernel.o"
    proc = subprocess.run([NVCC, "-c", "-std=c++17", "-O3", "--use_fast_math", f"-I{SRC}",
                           str(SRC / source), "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 0


@needs_nvcc
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not on PATH")
@pytest.mark.parametrize("source", ["quant.cpp", "quant_cuda_ops.cpp"])
def test_cuda_glue_compiles(source, tmp_path):
    """The ops' CUDA kernels (quant_cuda_ops.cpp, compiled only in CUDA builds: device guard, current
    stream) and the op library they register into type-check against torch's and the CUDA toolkit's
    headers. A CPU build of torch lacks the one header its CUDA build generates (c10's CUDA build macros);
    the test writes that one line itself."""
    from torch.utils.cpp_extension import include_paths
    dryrun = subprocess.run([NVCC, "--dryrun", "-c", "x.cu"], capture_output=True, text=True).stderr
    cuda_include = re.search(r'INCLUDES="(-I[^"]*)"', dryrun).group(1)  # the toolkit's headers, as nvcc has them
    generated = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    generated.parent.mkdir(parents=True)
    generated.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    inc = [f"-I{p}" for p in include_paths()] + [f"-I{sysconfig.get_paths()['include']}", f"-I{SRC}", cuda_include,
                                                 f"-I{tmp_path}"]
    proc = subprocess.run(["g++", "-fsyntax-only", "-std=c++17", "-DNUQ_WITH_CUDA=1",
                           "-DTORCH_EXTENSION_NAME=_quant", *inc, str(SRC / source)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


CASES = [(1000, 128), (30, 7), (20000, 8192), (5000, 300), (3, 1000), (4096, 1), (1 << 20, 8192)]


@needs_gpu
@pytest.mark.parametrize("method,bits", [("q", 3), ("qinf", 4), ("nuq", 3), ("nuq", 8), ("trn", 2)])
def test_cuda_equals_reference_bitwise(method, bits):
    torch.manual_seed(0)
    lv = get_method(method).init_levels(bits, 0.5)
    norm = get_method(method).norm
    for n, bucket in CASES:
        x = torch.randn(n) * 3
        for seed, offset in [(11, 0), (2 ** 40 + 3, 5)]:
            ref = kernel.quantize(x, lv, bucket, norm, seed, offset, backend="reference")
            got = kernel.quantize(x.cuda(), lv.cuda(), bucket, norm, seed, offset)
            assert torch.equal(ref, got.cpu()), (n, bucket, seed, offset)
            ri, rn = kernel.quantize_indices(x, lv, bucket, norm, seed, offset, backend="reference")
            gi, gn = kernel.quantize_indices(x.cuda(), lv.cuda(), bucket, norm, seed, offset)
            assert torch.equal(ri, gi.cpu()) and torch.equal(rn, gn.cpu())
            assert torch.equal(kernel.dequantize_indices(gi, gn, lv.cuda(), bucket).cpu(), ref)


@needs_gpu
def test_cuda_reference_backend_matches_on_device():
    """The reference itself runs on CUDA tensors and gives the same bits as on CPU."""
    x = torch.randn(5000)
    lv = get_method("q").init_levels(3, 0.5)
    a = kernel.quantize(x, lv, 512, "l2", 3, 7, backend="reference")
    b = kernel.quantize(x.cuda(), lv.cuda(), 512, "l2", 3, 7, backend="reference")
    assert torch.equal(a, b.cpu())


@needs_gpu
def test_cuda_zero_buckets_and_device_mismatch():
    x = torch.zeros(1000, device="cuda")
    lv = get_method("nuq").init_levels(3, 0.5)
    assert torch.equal(kernel.quantize(x, lv.cuda(), 100), torch.zeros_like(x))
    with pytest.raises(ValueError, match="levels is on cpu but x is on cuda"):
        kernel.quantize(x, lv, 100)


@needs_gpu
@pytest.mark.parametrize("features,group,pergroup", [(200, 64, True), (200, 64, False), (50, 7, True), (4100, 256, True)])
def test_cuda_group_codec_equals_the_cpu_reference_bitwise(features, group, pergroup):
    """nuq.groupquant on a GPU (group_cuda.cu) against its pure-PyTorch reference on the CPU."""
    from nuq import groupquant as gq
    g = torch.Generator().manual_seed(features)
    x = torch.randn(5, features, generator=g) * 3
    bits = torch.tensor([1, 8, 3, 2, 5], dtype=torch.uint8)
    for store in (torch.float32, torch.bfloat16):
        ref = gq.reference_compress(x, bits, group, pergroup, store, 2 ** 40 + 3, 5)
        got = gq.compress(x.cuda(), bits.cuda(), group, pergroup, store, 2 ** 40 + 3, 5)
        assert all(torch.equal(a, b.cpu()) for a, b in zip(ref, got))
        out = gq.decompress(*got[:1], bits.cuda(), got[1], got[2], group, features)
        assert torch.equal(out.cpu(), gq.reference_decompress(ref[0], bits, ref[1], ref[2], group, features))
