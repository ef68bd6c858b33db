"""Options of the `ilkp` plugin, inter-layer kernel sharing (torch-free: they join the option schema).

Ranges are schema bounds; `EFFECTS` says when a key can change a run (e.g. the pointwise options only on
the models with pointwise convs to share): both are checked when a grid is expanded, before anything runs.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

# the models whose separable_convs() give depthwise and pointwise convs (trainer/models/mobilenet.py);
# tests/test_ilkp.py checks this against the model registry
PW_ARCHS = ("mobilenet_cifar", "mobilenetv2_cifar")
QUANT_VERSIONS = ("v2q", "v2qq", "v2f", "q")
QUANT_AB_VERSIONS = ("v2qq", "v2f")

OPTIONS = {
    "ilkp_version": ("str", "v2qq",
                     "v2: fp alpha, beta; v2q: + weights quantized to ilkp_qb bits each epoch; v2qq: + alpha, beta "
                     "quantized to ilkp_qba, ilkp_qbb bits; v2nb: no beta (alpha = <c,r>/<r,r>), fp; v2f: v2qq with "
                     "each kernel's reference index fixed after its first fit (only alpha, beta refit); q: no sharing, the "
                     "chosen layers only quantized to ilkp_qb bits each epoch (the study's linear-quantization "
                     "baseline).",
                     ("v2", "v2q", "v2qq", "v2nb", "v2f", "q")),
    "ilkp_match": ("str", "l1",
                   "How a kernel's reference is chosen: l1 = smallest L1 residual of the least-squares fit (the "
                   "study's published code); abs_pcc = largest |Pearson correlation| (its later code).",
                   ("l1", "abs_pcc")),
    "ilkp_eps_mode": ("str", "add",
                      "Constant reference kernels (zero variance): add = add ilkp_eps to every denominator; "
                      "replace = use ilkp_eps for zero denominators; clamp = denominators at least ilkp_eps "
                      "(later code); alpha1 = alpha 1 where the denominator is zero.",
                      ("add", "replace", "clamp", "alpha1")),
    "ilkp_eps": ("float", 1e-8, "The epsilon of ilkp_eps_mode.", None, 0, None, True),
    "ilkp_qb": ("int", 8, "Weight bits of the q versions (v2q, v2qq, v2f), also the reference layer's bits.",
                None, 1, 16),
    "ilkp_qba": ("int", 8, "Bits of alpha (v2qq, v2f).", None, 1, 16),
    "ilkp_qbb": ("int", 8, "Bits of beta (v2qq, v2f).", None, 1, 16),
    "ilkp_every": ("int", 5, "Refit and write alpha R_k + beta back every this many epochs (the study's save-epoch).",
                   None, 1),
    "ilkp_no_pw": ("bool", False,
                   "MobileNet, MobileNetV2: leave the pointwise convs alone (the study's --np); by default their rows "
                   "are cut into sub-vectors of ilkp_pw_len weights shared on windows of the first pointwise conv."),
    "ilkp_pw_len": ("int", 8, "Pointwise sub-vector length (the study's pwd); every pointwise conv after the first "
                    "needs a multiple of it as its input channels.", None, 1, 1024),
    "ilkp_pw_stride": ("int", 1, "Stride of the windows over the first pointwise conv's rows that pointwise "
                       "sub-vectors are matched against (the study's pws; the tail window is always included).",
                       None, 1, 1024),
    "ilkp_ste": ("bool", False,
                 "Not the study's: a straight-through estimator. The forward uses the chosen layers' stored form "
                 "(quantized weights; shared vectors as alpha R_k + beta, alpha and beta refit on the last search's "
                 "indices) of latent float weights, re-derived after every step; the gradient taken there moves the "
                 "latent weights. Off: the study's loop, which trains the float weights themselves and only "
                 "quantizes / refits them at epoch ends."),
    "ilkp_fit_on_start": ("bool", True,
                          "Fit once when the run starts from another run's weights (init_from, init_checkpoint): "
                          "the post-hoc use, e.g. an eval_only stage."),
}


def _version_in(versions: tuple[str, ...]) -> Callable[[Mapping[str, Any]], bool]:
    return lambda c: c["ilkp_version"] in versions


def _shares_pw(c: Mapping[str, Any]) -> bool:
    return c["arch"] in PW_ARCHS and not c["ilkp_no_pw"] and c["ilkp_version"] != "q"


_SHARES = ("v2", "v2q", "v2qq", "v2nb", "v2f")
EFFECTS = {
    "ilkp_qb": (_version_in(QUANT_VERSIONS), "ilkp_version " + ", ".join(QUANT_VERSIONS)),
    "ilkp_qba": (_version_in(QUANT_AB_VERSIONS), "ilkp_version v2qq or v2f"),
    "ilkp_qbb": (_version_in(QUANT_AB_VERSIONS), "ilkp_version v2qq or v2f"),
    "ilkp_match": (_version_in(_SHARES), "an ilkp_version that shares kernels (not q)"),
    "ilkp_no_pw": (lambda c: c["arch"] in PW_ARCHS, "arch " + " or ".join(PW_ARCHS)),
    "ilkp_pw_len": (_shares_pw, f"arch {' or '.join(PW_ARCHS)}, ilkp_no_pw off and a sharing ilkp_version"),
    "ilkp_pw_stride": (_shares_pw, f"arch {' or '.join(PW_ARCHS)}, ilkp_no_pw off and a sharing ilkp_version"),
}
