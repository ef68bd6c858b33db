"""`ilkp`: inter-layer kernel sharing (ILKP / MESS, Lee & Bae, IEEE Access 2021; docs/ilkp.md).

Every 3x3 kernel of the shared layers is stored as alpha * R_k + beta, R_k one of the kernels of the
reference layer: an index and two numbers instead of 9 weights. The layers are the model's 3x3 convs with
groups 1, in module order, the first being the reference: for the CIFAR ResNets the stem plus every 3x3
conv inside the residual blocks (their 1x1 shortcuts are excluded by their size), for VGG every conv after
the first, for ImageNet ResNets (7x7 stem) layer1's first conv is the reference, as in the study's code.
Each epoch trains normally; the q versions then quantize the layers' weights to ilkp_qb bits, and every
ilkp_every epochs the fit is redone (alpha, beta quantized for v2qq/v2f) and alpha R_k + beta written back
into the weights. Version `q` is the study's comparison: the same layers only quantized, no sharing.
A run started from another run's weights fits once at the start (the post-hoc use).
Logged: `ilkp/compression` (bits of the chosen layers at 32 bits over their ILKP storage),
`ilkp/compression_model` (all parameters), `ilkp/err` and `ilkp/err_L<i>` (relative L2 reconstruction
error of the last fit, over all shared layers and per shared layer i = 1, 2, ...).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.plugins import ilkp_fit
from trainer.plugins.base import Plugin, register_plugin

FP_BITS = 32


def shared_layers(model: nn.Module) -> list[nn.Conv2d]:
    """The 3x3 convs with groups 1 in module order: the first is the reference layer, the rest are shared."""
    return [m for m in model.modules()
            if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3) and m.groups == 1]


def kernels(layer: nn.Conv2d) -> torch.Tensor:
    """The layer's weight as [out x in, 9] kernels (a view)."""
    return layer.weight.detach().reshape(-1, 9)


@register_plugin("ilkp")
class ILKP(Plugin):
    """Kernels of later 3x3 convs as affine copies of the reference layer's kernels, refit periodically."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__(opt)
        self.version = opt["ilkp_version"]
        self.quant_weights = self.version in ("v2q", "v2qq", "v2f", "q")
        self.shares = self.version != "q"  # q: the linear-quantization baseline, no sharing
        self.quant_ab = self.version in ("v2qq", "v2f")
        self.has_beta = self.version != "v2nb"
        self.fixed_index = self.version == "v2f"
        for key in ("ilkp_qb", "ilkp_qba", "ilkp_qbb"):
            if not 1 <= opt[key] <= 16:
                raise ValueError(f"{key} = {opt[key]}: expected 1..16 bits")
        if opt["ilkp_every"] < 1:
            raise ValueError(f"ilkp_every = {opt['ilkp_every']}: expected a positive number of epochs")
        if opt["ilkp_eps"] <= 0:
            raise ValueError(f"ilkp_eps = {opt['ilkp_eps']}: expected > 0")
        self.layers: list[nn.Conv2d] = []
        self.model: nn.Module | None = None
        self.fits: list[ilkp_fit.Fit] = []
        self.err: list[float] = []  # relative L2 reconstruction error of the last fit, per shared layer
        self.err_all = 0.0  # ... and over all shared layers
        self.n_fits = 0

    def configure_model(self, model: nn.Module) -> nn.Module:
        layers = shared_layers(model)
        if len(layers) < 2:
            raise ValueError(f"ilkp: arch {self.opt['arch']!r} has {len(layers)} 3x3 conv layer(s) with groups 1; "
                             "kernel sharing needs a reference layer and at least one shared layer")
        self.layers, self.model = layers, model
        return model

    # ---- the method ------------------------------------------------------------------------------------

    def quantize_weights(self) -> None:
        """Each chosen layer's weights to ilkp_qb bits over its own min..max."""
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.copy_(ilkp_fit.quantize(layer.weight, self.opt["ilkp_qb"]))

    def refit(self) -> None:
        """Fit every shared layer on the reference layer and write alpha R_k + beta into its weights."""
        o = self.opt
        ref = kernels(self.layers[0]).clone()
        fits, errs, diff2, norm2 = [], [], 0.0, 0.0
        with torch.no_grad():
            for i, layer in enumerate(self.layers[1:]):
                cur = kernels(layer)
                idx = self.fits[i].idx if self.fixed_index and self.fits else None
                f = ilkp_fit.fit(cur, ref, o["ilkp_match"], self.has_beta, o["ilkp_eps_mode"], o["ilkp_eps"], idx)
                if self.quant_ab:
                    f = f._replace(alpha=ilkp_fit.quantize(f.alpha, o["ilkp_qba"]),
                                   beta=ilkp_fit.quantize(f.beta, o["ilkp_qbb"]) if self.has_beta else f.beta)
                new = ilkp_fit.reconstruct(ref, f)
                d2, n2 = float((new - cur).square().sum()), float(cur.square().sum())
                errs.append((d2 / max(n2, 1e-30)) ** 0.5)
                diff2, norm2 = diff2 + d2, norm2 + n2
                layer.weight.copy_(new.reshape(layer.weight.shape))
                fits.append(f)
        self.fits, self.err, self.err_all = fits, errs, (diff2 / max(norm2, 1e-30)) ** 0.5
        self.n_fits += 1

    def after_load(self) -> None:
        if self.opt["ilkp_fit_on_start"]:
            if self.quant_weights:
                self.quantize_weights()
            if self.shares:
                self.refit()

    def on_epoch_end(self, epoch: int) -> bool:
        if self.quant_weights:
            self.quantize_weights()
        if self.shares and epoch % self.opt["ilkp_every"] == 0:
            self.refit()
        return False

    # ---- storage ---------------------------------------------------------------------------------------

    def storage_bits(self) -> tuple[int, int]:
        """(bits of the chosen layers at 32 bits, bits of their ILKP storage). The reference layer keeps its
        weights (at ilkp_qb bits for q versions, plus one 32-bit scale); each shared kernel is an index of
        ceil(log2 #refs) bits, alpha and beta (ilkp_qba / ilkp_qbb bits plus a 32-bit scale per layer each
        for v2qq/v2f, 32 bits otherwise; no beta for v2nb)."""
        o = self.opt
        ref_n = self.layers[0].weight.numel()
        original = sum(layer.weight.numel() for layer in self.layers) * FP_BITS
        if not self.shares:  # q: every layer at ilkp_qb bits plus its scale
            return original, original // FP_BITS * o["ilkp_qb"] + FP_BITS * len(self.layers)
        stored = ref_n * (o["ilkp_qb"] if self.quant_weights else FP_BITS) + (FP_BITS if self.quant_weights else 0)
        a_bits = o["ilkp_qba"] if self.quant_ab else FP_BITS
        b_bits = (o["ilkp_qbb"] if self.quant_ab else FP_BITS) if self.has_beta else 0
        per_layer_scales = FP_BITS * (1 + self.has_beta) if self.quant_ab else 0
        idx_bits = ilkp_fit.index_bits(ref_n // 9)
        for layer in self.layers[1:]:
            stored += layer.weight.numel() // 9 * (idx_bits + a_bits + b_bits) + per_layer_scales
        return original, stored

    def scalars(self) -> dict[str, float]:
        original, stored = self.storage_bits()
        total = sum(p.numel() for p in self.model.parameters()) * FP_BITS
        out = {"compression": original / stored, "compression_model": total / (total - original + stored),
               "fits": float(self.n_fits)}
        if self.err:
            out["err"] = self.err_all
            out.update({f"err_L{i + 1}": e for i, e in enumerate(self.err)})
        return out

    # ---- state -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"n_fits": self.n_fits, "err": list(self.err), "err_all": self.err_all, "idx": [f.idx for f in self.fits],
                "alpha": [f.alpha for f in self.fits], "beta": [f.beta for f in self.fits]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("idx") and len(state["idx"]) != len(self.layers) - 1:
            raise ValueError(f"ilkp: the saved fit has {len(state['idx'])} shared layers, this model "
                             f"{len(self.layers) - 1}")
        self.n_fits, self.err = int(state.get("n_fits", 0)), list(state.get("err", []))
        self.err_all = float(state.get("err_all", 0.0))
        self.fits = [ilkp_fit.Fit(*t) for t in zip(state.get("idx", []), state.get("alpha", []),
                                                   state.get("beta", []))]

    def carry_state(self) -> dict[str, Any] | None:
        """The fit (indices, alpha, beta) carries into a later stage: v2f keeps those indices there."""
        return self.state_dict() if self.fits else None
