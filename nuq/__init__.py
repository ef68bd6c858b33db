"""Quantization: level sets, the snapping kernel and its reference, adaptive level fitting."""
