"""Options of the `ilkp` plugin, inter-layer kernel sharing (torch-free: they join the option schema)."""

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
    "ilkp_fit_on_start": ("bool", True,
                          "Fit once when the run starts from another run's weights (init_from, init_checkpoint): "
                          "the post-hoc use, e.g. an eval_only stage."),
}
