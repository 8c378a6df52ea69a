"""Resuming an optimizer under the current config's hyper-parameters."""
from __future__ import annotations

# What a config sets per parameter group; the rest of a group's saved state (Adam's step counts
# and moments live in `state`, not here) is kept.
CONFIG_HPARAMS = ("lr", "betas", "weight_decay")


def load_optimizer_state(optimizer, state: dict) -> None:
    """optimizer.load_state_dict(state), but each parameter group keeps the learning rate, betas and
    weight decay it was built with: torch restores the saved ones, so a resumed stage whose config
    changes a learning rate (e.g. train.lr_w = 0 to hold the writer classifier fixed) would
    silently train at the old one. Works for torch optimizers and for Lookahead."""
    built = [{k: g[k] for k in CONFIG_HPARAMS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, hparams in zip(optimizer.param_groups, built):
        group.update(hparams)
