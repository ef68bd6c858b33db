"""Options of the `wq` plugin (weight/activation quantization; torch-free: they join the option schema).

The bits ranges (1..32) are schema bounds and the rule between keys (bits only with dorefa) is an effect
rule (`EFFECTS`): both are checked when a grid is expanded, before anything runs.
"""
from __future__ import annotations

from typing import Any, Mapping

METHODS = ("none", "xnor", "ternary", "dorefa")
VARIANTS = ("repo", "paper")
MIN_BITS, MAX_BITS = 1, 32

OPTIONS = {
    "wq_method": ("str", "none", "Quantize weights and conv inputs (simulated; latent weights stay full precision): "
                  "xnor is a1w1 (XNOR-Net), ternary a32w2 (TWN), dorefa takes wq_a_bits and wq_w_bits.", METHODS),
    "wq_w_bits": ("int", 32, "DoReFa weight bits (32: full precision).", None, MIN_BITS, MAX_BITS),
    "wq_a_bits": ("int", 32, "DoReFa activation (conv input) bits (32: full precision).", None, MIN_BITS, MAX_BITS),
    "wq_twn_alpha": ("str", "repo", "Ternary scale: repo (the study's code: the sum of the kept absolute weights "
                     "over the count of the zeroed ones) or paper (TWN: over the count of the kept ones).", VARIANTS),
    "wq_dorefa_variant": ("str", "repo", "DoReFa: repo (the study's code: activations tanh-normalised by the "
                          "batch max) or paper (activations clipped to [0, 1]; 1-bit weights sign x mean absolute "
                          "weight).",
                          VARIANTS),
    "wq_first_last": ("bool", False, "Also quantize the first conv (the stem) and the last layer (the classifier)."),
}


def _dorefa(config: Mapping[str, Any]) -> bool:
    return config["wq_method"] == "dorefa"


# the bits change a run only under dorefa (xnor and ternary have fixed bits): a grid that sweeps them
# under another method is an error at expansion, one that sets them there a warning (trainer/options.py)
EFFECTS = {"wq_w_bits": (_dorefa, "wq_method=dorefa"), "wq_a_bits": (_dorefa, "wq_method=dorefa")}
