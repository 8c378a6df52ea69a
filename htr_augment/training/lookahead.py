"""Lookahead (Zhang et al. 2019): k fast steps of an inner optimizer, then pull slow weights toward them.

The seed project trained its GAN with it; it is kept as an option. The slow weights
live in the wrapper's state dict so that a resumed run continues exactly.
"""
from __future__ import annotations

import torch


class Lookahead:
    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead needs k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        self.optimizer, self.k, self.alpha = optimizer, k, alpha
        self.steps = 0
        self.slow = [[p.detach().clone() for p in g["params"]] for g in optimizer.param_groups]

    @property
    def param_groups(self) -> list[dict]:
        # the inner optimizer's, read each time: its load_state_dict replaces the list
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.optimizer.step()
        self.steps += 1
        if self.steps % self.k == 0:
            for group, slow in zip(self.optimizer.param_groups, self.slow):
                for p, s in zip(group["params"], slow):
                    s.add_(p - s, alpha=self.alpha)
                    p.copy_(s)

    def state_dict(self) -> dict:
        return {"inner": self.optimizer.state_dict(), "steps": self.steps, "slow": self.slow}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["inner"])
        self.steps = state["steps"]
        for mine, saved in zip(self.slow, state["slow"]):
            for m, s in zip(mine, saved):
                m.copy_(s)
