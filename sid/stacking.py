"""K identities' mappers and AdamW states as one learn step drives them (``sid.train.Learner``).

At K = 1 they are one mapper and its optimizer, exactly as ``sid learn`` holds them; at K > 1 the
mappers are stacked (``StackedMappers``) under one AdamW whose elementwise state is each identity's
own, sliced back out for each identity's checkpoint and stacked again on resume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from sid.checkpoints import save_state
from sid.methods import RECIPES, StackedMappers, slice_state, stack_states

if TYPE_CHECKING:
    from sid.losslog import LossLog


class Mappers:
    """K units' mappers and AdamW states as one step drives them. At K = 1 the mapper and optimizer
    themselves, so one identity is learned exactly as alone; at K > 1 stacked (StackedMappers) under
    one AdamW, whose elementwise state is each identity's own and is sliced back out for its checkpoint.
    """

    def __init__(
        self,
        mappers: list[torch.nn.Module],
        optimizers: list[torch.optim.Optimizer],
        method: str,
        lr: float,
        device: str,
        resumed: bool,
        capturable: bool = False,
    ) -> None:
        self.singles, self.single_optimizers = mappers, optimizers
        self.module: torch.nn.Module = mappers[0]
        self.optimizer: torch.optim.Optimizer = optimizers[0]
        if len(mappers) > 1:
            self.module = StackedMappers(mappers)
            self.optimizer = make_optimizer(self.module.parameters(), method, lr, device, capturable)
            if resumed:
                singles = [o.state_dict() for o in optimizers]
                self.optimizer.load_state_dict(stack_states(singles, self.optimizer.state_dict()))

    def __call__(self, faces: torch.Tensor) -> torch.Tensor:
        """(K, B, f) face features -> (K, B, 2, sum d): each unit's vectors on its own faces."""
        return self.module(faces) if len(self.singles) > 1 else self.module(faces[0])[None]

    def state(self) -> list[torch.Tensor]:
        """Every tensor a step changes: the mapper's parameters and buffers, the optimizer's state."""
        held = [*self.module.parameters(), *self.module.buffers()]
        return held + [
            v for entry in self.optimizer.state.values() for v in entry.values() if torch.is_tensor(v)
        ]

    def single(self, i: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Unit i's mapper and optimizer, as its own run would hold them."""
        if len(self.singles) == 1:
            return self.module, self.optimizer
        self.singles[i].load_state_dict(self.module.state_of(i))
        like = self.single_optimizers[i].state_dict()
        self.single_optimizers[i].load_state_dict(slice_state(self.optimizer.state_dict(), i, like))
        return self.singles[i], self.single_optimizers[i]

    def save(self, units: list[Any], gens: list[torch.Generator], logs: list[LossLog], step: int) -> None:
        """Each unit's state (``units``: ``sid.train.Unit``s, not imported: train imports this module),
        written as its run of its own would write it."""
        for i, unit in enumerate(units):
            mapper, optimizer = self.single(i)
            save_state(unit.ckpt, mapper, optimizer, gens[i], step, logs[i].flush(), unit.meta)

    @torch.no_grad()
    def final(self, units: list[Any], ema: bool) -> list[list[torch.Tensor]]:
        """Each unit's stored vectors, (2, sum d) per identity: the mapper on the unaugmented face
        embedding (StableIdentity; several photos: the mean of its outputs for each) or the moving
        average of the coefficients training used, over every photo's samples (Celeb Basis, K = 1)."""
        self.module.eval()
        if ema:
            return [[self.module.averaged_vectors(i).float().cpu() for i in range(len(units[0].names))]]
        n = max(len(unit.faces) for unit in units)  # units of fewer photos padded (rows are independent)
        plain = torch.stack(
            [
                torch.stack([f[0] for f in unit.faces] + [unit.faces[0][0]] * (n - len(unit.faces)))
                for unit in units
            ]
        )  # (K, n, f)
        out = self(plain).float().cpu()  # (K, n, 2, sum d)
        return [
            [out[k, unit.photos_of(i)].mean(dim=0) for i in range(len(unit.names))]
            for k, unit in enumerate(units)
        ]


# -- the run's parts ---------------------------------------------------------------------------------


def make_optimizer(
    params: Any, method: str, lr: float, device: str, capturable: bool = False
) -> torch.optim.AdamW:
    """The method's AdamW over ``params`` (fused on CUDA: one kernel for every parameter; capturable
    when a CUDA graph replays the whole step); a batch's stacked mappers get the same optimizer as one
    identity learned alone."""
    recipe = RECIPES[method]
    fused = {"fused": True, "capturable": capturable} if device.startswith("cuda") else {}
    return torch.optim.AdamW(params, lr=lr, betas=recipe.betas, weight_decay=recipe.weight_decay, **fused)
