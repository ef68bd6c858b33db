"""`ilkp`: inter-layer kernel sharing (ILKP / MESS, Lee & Bae, IEEE Access 2021; docs/ilkp.md).

Every 3x3 kernel of the shared layers is stored as alpha * R_k + beta, R_k one of the kernels of the
reference layer: an index and two numbers instead of 9 weights. The layers (`kernel_sets`) are the study's:
for most models the 3x3 convs with groups 1, in module order, the first being the reference (CIFAR ResNets:
the stem plus every 3x3 conv inside the residual blocks, their 1x1 shortcuts excluded by their size; VGG:
every conv after the first; ImageNet ResNets, 7x7 stem: layer1's first conv is the reference). Models with
separable convs (MobileNet, MobileNetV2: `separable_convs()`) share their depthwise 3x3 kernels on the first
depthwise conv's and, unless ilkp_no_pw, cut each row of their pointwise convs into sub-vectors of
ilkp_pw_len weights matched against every window (ilkp_pw_stride apart) of the first pointwise conv's rows.
Each epoch trains normally; the q versions then quantize the layers' weights to ilkp_qb bits, and every
ilkp_every epochs the fit is redone (alpha, beta quantized for v2qq/v2f) and alpha R_k + beta written back
into the weights. Version `q` is the study's comparison: the same layers only quantized, no sharing.
A run started from another run's weights fits once at the start (the post-hoc use).
Logged: `ilkp/compression` (bits of the chosen layers at 32 bits over their ILKP storage; with two sets
also `ilkp/compression_depthwise` and `ilkp/compression_pw`), `ilkp/compression_model` (all parameters),
`ilkp/err`, `ilkp/err_L<i>` and `ilkp/err_pw_L<i>` (relative L2 reconstruction error of the last fit, over
all shared layers, per shared 3x3/depthwise layer and per shared pointwise layer i = 1, 2, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainer.plugins import ilkp_fit
from trainer.plugins.ilkp_options import QUANT_AB_VERSIONS, QUANT_VERSIONS
from trainer.plugins.base import Plugin, register_plugin

FP_BITS = 32


@dataclass
class KernelSet:
    """A reference layer (layers[0]) and the layers shared on it, read as vectors of `length` weights: the
    3x3 (or depthwise) kernels, length 9, matched against the reference's own kernels; or the rows of
    pointwise convs cut into sub-vectors, matched against every window of the reference rows `stride` apart."""
    name: str
    layers: list[nn.Conv2d]
    length: int = 9
    stride: int | None = None  # None: the reference layer's own vectors are the references

    def vectors(self, layer: nn.Conv2d) -> torch.Tensor:
        """The layer's weight as [n, length] vectors (a view)."""
        return layer.weight.detach().reshape(-1, self.length)

    def references(self) -> torch.Tensor:
        """[#references, length]: the reference layer's vectors or the windows of its rows."""
        w = self.layers[0].weight.detach()
        if self.stride is None:
            return w.reshape(-1, self.length)
        return ilkp_fit.windows(w.reshape(w.shape[0], -1), self.length, self.stride)

    def check(self, arch: str) -> None:
        """Refuse a set the method cannot run on, naming the layer and what would be accepted."""
        if len(self.layers) < 2:
            raise ValueError(f"ilkp: arch {arch!r} has {len(self.layers)} {self.name} conv layer(s); kernel sharing "
                             "needs a reference layer and at least one shared layer")
        rows = [layer.weight[0].numel() for layer in self.layers]
        if rows[0] < self.length:
            raise ValueError(f"ilkp: the reference {self.name} layer's rows have {rows[0]} weights, fewer than "
                             f"ilkp_pw_len = {self.length}")
        bad = [i for i, n in enumerate(rows[1:], 1) if n % self.length]
        if bad:
            raise ValueError(f"ilkp: {self.name} layer {bad[0]} has rows of {rows[bad[0]]} weights, not a multiple of "
                             f"the sub-vector length {self.length} (ilkp_pw_len); choose a divisor or set ilkp_no_pw")


def shared_layers(model: nn.Module) -> list[nn.Conv2d]:
    """The 3x3 convs with groups 1 in module order: the first is the reference layer, the rest are shared."""
    return [m for m in model.modules()
            if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3) and m.groups == 1]


def kernel_sets(model: nn.Module, opt: dict[str, Any]) -> list[KernelSet]:
    """The study's choice of layers: a model with separable convs (MobileNet, MobileNetV2) shares its
    depthwise 3x3 kernels and, unless ilkp_no_pw, its pointwise convs' sub-vectors; any other model its 3x3
    convs with groups 1."""
    separable = getattr(model, "separable_convs", None)
    if separable is None:
        return [KernelSet("3x3", shared_layers(model))]
    dw, pw = separable()
    sets = [KernelSet("depthwise", dw)]
    if not opt["ilkp_no_pw"]:
        sets.append(KernelSet("pw", pw, opt["ilkp_pw_len"], opt["ilkp_pw_stride"]))
    return sets


@register_plugin("ilkp")
class ILKP(Plugin):
    """Kernels of later 3x3 convs as affine copies of the reference layer's kernels, refit periodically."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__(opt)  # the option ranges are the schema's (ilkp_options.py), checked before a run
        self.version = opt["ilkp_version"]
        self.quant_weights = self.version in QUANT_VERSIONS
        self.shares = self.version != "q"  # q: the linear-quantization baseline, no sharing
        self.quant_ab = self.version in QUANT_AB_VERSIONS
        self.has_beta = self.version != "v2nb"
        self.fixed_index = self.version == "v2f"
        self.sets: list[KernelSet] = []
        self.model: nn.Module | None = None
        self.fits: list[ilkp_fit.Fit] = []  # per shared layer, set by set
        self.err: list[float] = []  # relative L2 reconstruction error of the last fit, per shared layer
        self.err_all = 0.0  # ... and over all shared layers
        self.n_fits = 0
        self.ste = opt["ilkp_ste"]
        self.latent: list[torch.Tensor] | None = None  # ilkp_ste: the float weights of the chosen layers ...
        self.shown: list[torch.Tensor] | None = None  # ... and their stored form the forward last used

    def configure_model(self, model: nn.Module) -> nn.Module:
        sets = kernel_sets(model, self.opt)
        for kset in sets:
            kset.check(self.opt["arch"])
        self.sets, self.model = sets, model
        return model

    @property
    def layers(self) -> list[nn.Conv2d]:
        """Every chosen layer, set by set (each set's reference first)."""
        return [layer for kset in self.sets for layer in kset.layers]

    def shared(self) -> list[tuple[KernelSet, nn.Conv2d]]:
        """(its set, the layer) for every shared layer, in the order of `fits` and `err`."""
        return [(kset, layer) for kset in self.sets for layer in kset.layers[1:]]

    # ---- the method ------------------------------------------------------------------------------------

    def quantize_weights(self) -> None:
        """Each chosen layer's weights to ilkp_qb bits over its own min..max."""
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.copy_(ilkp_fit.quantize(layer.weight, self.opt["ilkp_qb"]))

    def refit(self, keep_index: bool = False) -> None:
        """Fit every shared layer on its set's references and write alpha R_k + beta into its weights; with
        keep_index (and always for v2f once fitted) each vector keeps its reference, only alpha, beta refit.
        `fits` counts the calls without keep_index (the scheduled refits)."""
        o = self.opt
        scheduled = not keep_index
        keep_index = (keep_index or self.fixed_index) and bool(self.fits)
        refs = {kset.name: kset.references().clone() for kset in self.sets}
        fits, errs, diff2, norm2 = [], [], 0.0, 0.0
        with torch.no_grad():
            for i, (kset, layer) in enumerate(self.shared()):
                ref, cur = refs[kset.name], kset.vectors(layer)
                idx = self.fits[i].idx if keep_index else None
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
        self.n_fits += scheduled

    def snap(self, new_index: bool) -> None:
        """The study's epoch-end work on the current weights: quantize (q versions), then fit (a new index
        search when new_index, else alpha, beta on the kept indices, if there are any) and write back."""
        if self.quant_weights:
            self.quantize_weights()
        if self.shares and (new_index or self.fits):
            self.refit(keep_index=not new_index)

    def after_load(self) -> None:
        if self.opt["ilkp_fit_on_start"]:
            if self.ste:
                self.latent = [layer.weight.detach().clone() for layer in self.layers]
            self.snap(new_index=True)
            if self.ste:
                self.shown = [layer.weight.detach().clone() for layer in self.layers]

    def after_step(self, step: int) -> None:
        """ilkp_ste: move the latent weights by the optimizer's update of the stored form (gradient taken
        there, applied to the latent weights: straight through), then show the new latent weights' stored
        form to the next forward (indices kept until the next epoch-end refit)."""
        if not self.ste:
            return
        with torch.no_grad():
            if self.latent is None or self.shown is None:  # the first step trained the weights themselves
                self.latent = [layer.weight.detach().clone() for layer in self.layers]
            else:
                for w, shown, layer in zip(self.latent, self.shown, self.layers):
                    w += layer.weight - shown
                    layer.weight.copy_(w)
            self.snap(new_index=False)
            self.shown = [layer.weight.detach().clone() for layer in self.layers]

    def on_epoch_end(self, epoch: int) -> bool:
        refit = self.shares and epoch % self.opt["ilkp_every"] == 0
        if not self.ste:
            if self.quant_weights:
                self.quantize_weights()
            if refit:
                self.refit()
        elif refit and self.latent is not None:  # the stored form is kept after every step: only a new search
            with torch.no_grad():
                for w, layer in zip(self.latent, self.layers):
                    layer.weight.copy_(w)
            self.snap(new_index=True)
            self.shown = [layer.weight.detach().clone() for layer in self.layers]
        return False

    # ---- storage ---------------------------------------------------------------------------------------

    def set_bits(self, kset: KernelSet) -> tuple[int, int]:
        """(bits of the set's layers at 32 bits, bits of their ILKP storage). The reference layer keeps its
        weights (at ilkp_qb bits for q versions, plus one 32-bit scale); each shared vector (a 3x3 kernel or a
        pointwise sub-vector) is an index of ceil(log2 #references) bits, alpha and beta (ilkp_qba / ilkp_qbb
        bits plus a 32-bit scale per layer each for v2qq/v2f, 32 bits otherwise; no beta for v2nb)."""
        o = self.opt
        ref_n = kset.layers[0].weight.numel()
        original = sum(layer.weight.numel() for layer in kset.layers) * FP_BITS
        if not self.shares:  # q: every layer at ilkp_qb bits plus its scale
            return original, original // FP_BITS * o["ilkp_qb"] + FP_BITS * len(kset.layers)
        stored = ref_n * (o["ilkp_qb"] if self.quant_weights else FP_BITS) + (FP_BITS if self.quant_weights else 0)
        a_bits = o["ilkp_qba"] if self.quant_ab else FP_BITS
        b_bits = (o["ilkp_qbb"] if self.quant_ab else FP_BITS) if self.has_beta else 0
        per_layer_scales = FP_BITS * (1 + self.has_beta) if self.quant_ab else 0
        idx_bits = ilkp_fit.index_bits(kset.references().shape[0])
        for layer in kset.layers[1:]:
            stored += layer.weight.numel() // kset.length * (idx_bits + a_bits + b_bits) + per_layer_scales
        return original, stored

    def storage_bits(self) -> tuple[int, int]:
        """(bits of all chosen layers at 32 bits, bits of their ILKP storage), summed over the kernel sets."""
        bits = [self.set_bits(kset) for kset in self.sets]
        return sum(o for o, _ in bits), sum(s for _, s in bits)

    def _err_keys(self) -> list[str]:
        """err_L<i> for the first set's shared layer i (1-based), err_<set>_L<i> for a later set's."""
        keys = []
        for n, kset in enumerate(self.sets):
            prefix = "err_L" if n == 0 else f"err_{kset.name}_L"
            keys += [f"{prefix}{i}" for i in range(1, len(kset.layers))]
        return keys

    def scalars(self) -> dict[str, float]:
        original, stored = self.storage_bits()
        total = sum(p.numel() for p in self.model.parameters()) * FP_BITS
        out = {"compression": original / stored, "compression_model": total / (total - original + stored),
               "fits": float(self.n_fits)}
        if len(self.sets) > 1:
            out.update({f"compression_{kset.name}": o / s for kset in self.sets for o, s in [self.set_bits(kset)]})
        if self.err:
            out["err"] = self.err_all
            out.update(zip(self._err_keys(), self.err))
        return out

    # ---- state -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = {"n_fits": self.n_fits, "err": list(self.err), "err_all": self.err_all,
                 "idx": [f.idx for f in self.fits], "alpha": [f.alpha for f in self.fits],
                 "beta": [f.beta for f in self.fits]}
        if self.latent is not None and self.shown is not None:  # ilkp_ste: exact resume needs both
            state.update(latent=[w.clone() for w in self.latent], shown=[w.clone() for w in self.shown])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n_shared = len(self.shared())
        if state.get("idx") and len(state["idx"]) != n_shared:
            raise ValueError(f"ilkp: the saved fit has {len(state['idx'])} shared layers, this model {n_shared}")
        self.n_fits, self.err = int(state.get("n_fits", 0)), list(state.get("err", []))
        self.err_all = float(state.get("err_all", 0.0))
        self.fits = [ilkp_fit.Fit(*t) for t in zip(state.get("idx", []), state.get("alpha", []),
                                                   state.get("beta", []))]
        if self.ste and "latent" in state:
            self.latent, self.shown = list(state["latent"]), list(state["shown"])

    def carry_state(self) -> dict[str, Any] | None:
        """The fit (indices, alpha, beta) carries into a later stage: v2f keeps those indices there (the
        latent weights of ilkp_ste do not: a later stage starts from the stored form)."""
        if not self.fits:
            return None
        return {k: v for k, v in self.state_dict().items() if k not in ("latent", "shown")}
