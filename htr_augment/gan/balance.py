"""Balancing the generator's losses (the key point of Alonso et al. 2019), made steady.

Every loss is differentiated with respect to the generated image only; each gradient is
divided by a running average (EMA) of its own standard deviation and weighted:

    grad = sum_i  w_i * grad_i / std_ema(grad_i)

Alonso et al. rescale the CTC gradient to alpha * std(adv) / std(ctc) of the *current*
batch and add it to the raw adversarial gradient, so the size of G's whole step follows
std(adv): with a weak D that is tiny and noisy, and one 38x jump of it broke a 10,000-step
run (issue 9). Here no term can shrink or blow up another, and a single noisy batch moves
the scale by 1 - decay only. In Alonso's terms the CTC weight is
w_ctc / w_adv * std_ema(adv) / std_ema(ctc), logged as `ctc_weight`; its floor is the
configured ratio in normalised units, whatever D does.
"""
from __future__ import annotations

import torch


class GradientBalancer:
    """Running-std normalisation of image gradients; state is saved in checkpoints."""

    def __init__(self, weights: dict[str, float], decay: float = 0.99, eps: float = 1e-12):
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        self.decay, self.eps = decay, eps
        self.std: dict[str, float] = {}

    def combine(self, grads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted sum of the normalised gradients, and per-term statistics to log."""
        total, stats, weighed = None, {}, False
        for name, g in grads.items():
            w = self.weights.get(name, 0.0)
            if w == 0.0:
                continue
            weighed = True
            s = float(g.detach().float().std())
            if not torch.isfinite(torch.tensor(s)):
                raise FloatingPointError(f"non-finite gradient of the {name} loss")
            if s == 0.0:  # nothing to add (a capped term past its cap): keep its running std as it was
                continue
            old = self.std.get(name)
            self.std[name] = s if old is None else self.decay * old + (1 - self.decay) * s
            # / numel: the gradient of a mean-reduced loss of unit scale, so that G's gradient
            # norm (and its clipping threshold) does not depend on the batch or image size.
            term = g * (w / ((self.std[name] + self.eps) * g.numel()))
            total = term if total is None else total + term
            stats[f"std_grad_{name}"] = s
        if not weighed:
            raise ValueError("no generator loss has a positive weight")
        if total is None:  # every weighed term's gradient was zero
            total = torch.zeros_like(next(iter(grads.values())))
        if "adv" in self.std and "ctc" in self.std and "ctc" in self.weights and "adv" in self.weights:
            stats["ctc_weight"] = (self.weights["ctc"] / self.weights["adv"]) * self.std["adv"] / (self.std["ctc"] + self.eps)
        return total, stats

    def backward(self, image: torch.Tensor, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """Back-propagate the balanced gradient of `image` into whatever produced it.

        Gradients are taken with respect to `image`, so D's and R's parameters receive nothing."""
        names = [k for k in losses if self.weights.get(k, 0.0) > 0]
        grads = {k: torch.autograd.grad(losses[k], image, retain_graph=True, allow_unused=True)[0] for k in names}
        grads = {k: g for k, g in grads.items() if g is not None}
        combined, stats = self.combine(grads)
        image.backward(combined)
        return stats

    def state_dict(self) -> dict:
        return {"std": dict(self.std)}

    def load_state_dict(self, state: dict, batch_ratio: float = 1.0) -> None:
        """batch_ratio: the saving run's batch size / this run's. Every term is a mean over the
        batch, so its image gradient's std scales as 1 / batch: a running std kept from batch 64
        would be 4 times too small at 16, and G's first hundreds of steps 4 times too large (seen
        when stage 11's GPU checkpoint resumed on the CPU: live R-CER 0.012 -> 0.18 in 20 G steps)."""
        self.std = {k: float(v) * batch_ratio for k, v in state.get("std", {}).items()}
