"""Balancing the adversarial and CTC gradients (the key point of Alonso et al. 2019).

Both losses are differentiated with respect to the generated image only. The CTC
gradient is rescaled so that its standard deviation is `alpha` times that of the
adversarial gradient before the two are added:

    grad = grad_adv + alpha * (std(grad_adv) / std(grad_ctc)) * grad_ctc

Neither term can then drown the other, whatever the raw scale of the CTC loss.
"""
from __future__ import annotations

import torch


def balance_gradients(grad_adv: torch.Tensor, grad_ctc: torch.Tensor, alpha: float,
                      eps: float = 1e-12) -> tuple[torch.Tensor, float]:
    """Return the combined image gradient and the scale applied to the CTC term."""
    scale = alpha * grad_adv.std() / (grad_ctc.std() + eps)
    return grad_adv + scale * grad_ctc, float(scale)


def backward_balanced(image: torch.Tensor, loss_adv: torch.Tensor, loss_ctc: torch.Tensor,
                      alpha: float) -> dict[str, float]:
    """Back-propagate the balanced gradient of `image` into the generator only.

    Gradients are taken with respect to `image`, so the discriminator's and the
    recognizer's parameters receive nothing from this step."""
    grad_adv, = torch.autograd.grad(loss_adv, image, retain_graph=True)
    grad_ctc, = torch.autograd.grad(loss_ctc, image, retain_graph=True)
    combined, scale = balance_gradients(grad_adv, grad_ctc, alpha)
    image.backward(combined)
    return {"std_grad_adv": float(grad_adv.std()), "std_grad_ctc": float(grad_ctc.std()), "ctc_scale": scale}
