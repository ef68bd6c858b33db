"""Bounds of the kernels' arguments, torch-free so the trainer's option schema (`trainer/options.py`) can
validate a grid against them before anything runs; `nuq.checks` enforces them at the kernel boundary and
csrc/quant/quant_common.h (kMaxBucket) in C++."""

# The largest bucket: 2^31 - 1 values (8 GiB of float32 in one bucket, far beyond any useful bucket, since a
# bucket's norm scales all its values). Below it every size derived from a bucket (n + bucket, a pointer one
# bucket ahead, ceil(n / bucket)) stays far from int64 overflow, and the CUDA kernel's int lane strides hold.
MAX_BUCKET_SIZE = 2 ** 31 - 1

# The largest group of the ActNN group codec (nuq/groupquant.py; kMaxGroup in csrc/quant/group.cpp): a work
# unit holds 8 groups' random words and codes, so they stay small; the study's groups are 64 or 256.
MAX_GROUP_SIZE = 2 ** 16
