"""Per-layer parameter statistics over training (the weight-mechanism paper's Fig. 5 / Fig. 7).

For every trainable tensor of the layout (conv and linear weights, biases, BatchNorm
weight/bias, AGC λ/γ/β ...; the kind of each is ``/layers/kind``) a recording stores

- ``/params/mean [S, L]``: the mean of the tensor's elements;
- ``/params/var [S, L]``: their population variance (ddof = 0, the paper's "square error";
  0 for a one-element tensor);
- ``/params/grad_norm [S, L]``: the L2 norm of that tensor's slice of the training
  minibatch gradient that produced the recorded parameters, i.e. ``∂ loss_s / ∂ θ`` of the
  mean cross-entropy of batch s at θ_{s-1}, before weight decay and momentum (the raw
  ``p.grad`` that SGD step s consumed). NaN at step 0 (no step yet). The lecture's
  question "do all layers train at the same rate" is read off its spread across layers;

with ``/params/step [S]`` (optimizer steps taken so far, 0 = initialisation) and
``/params/epoch [S]`` (float: epochs of training completed, ``step / batches per epoch``).

``track.param_stats`` chooses when: ``"epoch"`` records at initialisation and after each
epoch's last step; ``"every:N"`` at initialisation and after every N-th step (counted over
the whole run) plus each epoch's last step; ``"off"`` records nothing. Statistics are
computed on the device in float64 and copied to the host once per recording.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gradlab.runfile import names
from gradlab.config import Schedule
from gradlab.track.layout import ParamLayout





def param_moments(params: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Per-tensor mean and population variance, float64 ``[L]`` each."""
    with torch.no_grad():
        stats = [torch.var_mean(p.detach().double(), correction=0) for p in params]
        var = torch.stack([v for v, _ in stats])
        mean = torch.stack([m for _, m in stats])
    return mean.cpu().numpy(), var.cpu().numpy()


def grad_norms(params: list[torch.Tensor]) -> np.ndarray:
    """Per-tensor L2 norm of ``p.grad`` (0 where a tensor received no gradient), float64 ``[L]``."""
    with torch.no_grad():
        norms = [torch.linalg.vector_norm(p.grad.double()) if p.grad is not None
                 else torch.zeros((), dtype=torch.float64, device=p.device) for p in params]
    return torch.stack(norms).cpu().numpy()


class ParamStatsRecorder:
    """Records ``/params/*`` rows through a ``RunWriter``-like ``append(name, row, index)``.

    Call ``record_init()`` before training, ``after_step()`` after every optimizer step
    (gradients still in ``p.grad``) and ``end_epoch()`` after each epoch's last step.
    ``steps_per_epoch`` may be None (a user's loop): it is then learnt from the first
    epoch's ``after_step`` calls, and that epoch's ``/params/epoch`` values, still pending in
    the writer, are filled in at its end. An epoch without any ``after_step`` call counts as
    ``steps_per_epoch`` steps (one, if never known).
    """

    def __init__(self, model: nn.Module, layout: ParamLayout, spec: str, steps_per_epoch: int | None, append):
        self.schedule = Schedule.parse(spec)
        named = dict(model.named_parameters())
        self.params = [named[n] for n in layout.names]
        self.steps_per_epoch = max(steps_per_epoch, 1) if steps_per_epoch is not None else None
        self.append = append
        self.step = 0
        self.rows = 0
        self._last_recorded = -1
        self._epoch_steps = 0  # after_step calls in the current epoch
        self._unknown_epoch: list[tuple[int, int]] = []  # (row, step) recorded before steps_per_epoch was known

    @property
    def enabled(self) -> bool:
        return self.schedule.enabled

    def _record(self, with_grad: bool) -> None:
        mean, var = param_moments(self.params)
        g = grad_norms(self.params) if with_grad else np.full(len(self.params), np.nan)
        i = self.rows
        self.append(names.PARAM_STEP, np.int64(self.step), i)
        if self.steps_per_epoch is None:
            self._unknown_epoch.append((i, self.step))
        self.append(names.PARAM_EPOCH, np.float64(self.step / (self.steps_per_epoch or 1)), i)
        self.append(names.PARAM_MEAN, mean, i)
        self.append(names.PARAM_VAR, var, i)
        self.append(names.PARAM_GRAD_NORM, g, i)
        self.rows += 1
        self._last_recorded = self.step

    def resume_at(self, epoch: int, rows: int) -> None:
        """Continue a resumed run: ``epoch`` epochs done, ``rows`` recordings already in the file."""
        self.step = self._last_recorded = epoch * (self.steps_per_epoch or 1)
        self.rows = rows

    def record_init(self) -> None:
        if self.enabled:
            self._record(with_grad=False)

    def after_step(self) -> None:
        self.step += 1
        self._epoch_steps += 1
        if self.enabled and self.schedule.every and self.step % self.schedule.every == 0:
            self._record(with_grad=True)

    def end_epoch(self) -> None:
        if self._epoch_steps == 0:  # the loop never called after_step: the epoch is a block of steps
            self.step += self.steps_per_epoch or 1
        if self.steps_per_epoch is None:
            self.steps_per_epoch = max(self._epoch_steps, 1)
            for row, step in self._unknown_epoch:  # still pending in the writer: overwrite
                self.append(names.PARAM_EPOCH, np.float64(step / self.steps_per_epoch), row)
            self._unknown_epoch = []
        self._epoch_steps = 0
        if self.enabled and self._last_recorded != self.step:
            self._record(with_grad=self.step > 0)
