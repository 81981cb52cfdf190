"""The fast training step (``fast_step=true``): the whole step as one function on static buffers, captured as a
CUDA graph on CUDA and called as plain eager code elsewhere (so a CPU test compares it with ``train_one_epoch``).

One step = copy the step's draws (image indices, crop offsets, flips: drawn per epoch by
``TensorLoader.epoch_draws`` in the eager loop's order, so both paths see the same batches) into static
buffers, then [gather + crop + flip + normalise, forward, loss, backward, fused SGD with a tensor lr, the
direction update in place, loss and accuracy logged on the device]. Nothing in an epoch waits for the host:
the losses are read once at its end (a NaN still stops the run, naming its step).

What would silently break a captured step (PyTorch's CUDA-graph notes: static inputs, no host sync, no new
allocations during capture) and how it is avoided here:
- inputs: fixed buffers, refilled with ``copy_`` outside the graph; randomness is drawn on the CPU per epoch,
  never inside the graph;
- warm-up: 3 real (counted) steps on a side stream before capture; they also create SGD's momentum buffers, so
  the first-step branch is not frozen into the graph; ``zero_grad(set_to_none=True)`` once, before capture;
- learning rate: fused SGD with a device tensor lr, changed per epoch with ``fill_`` (foreach SGD would turn it
  into a Python number); mu likewise;
- state updates in place (``direction.copy_``), class-count tensors made on the device before capture
  (``methods.make_criterion(..., device)``), the last partial batch dropped (one shape);
- a loss that changes between epochs (DRW's re-weighting) is recaptured when ``methods.criterion_phase`` changes.
Mixup/CutMix, AutoAugment/RandAugment, Cutout and distributed runs draw or talk on the host each step: they
run the eager loop (``fit`` says so, and refuses ``fast_step=true`` with them).
"""
from __future__ import annotations

import torch

from lt_kit.errors import LtKitError, check_losses
from lt_kit.maths.tde import update_direction
from lt_kit.precision import autocast, resolve_bf16


def make_optimizer(model, params: dict, device: torch.device) -> torch.optim.SGD:
    """The fast path's SGD: fused (one kernel for all parameters) with a device-tensor learning rate; a frozen
    backbone's parameters are left out (``freeze_backbone``)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(trainable, lr=torch.tensor(float(params["lr"]), device=device),
                           momentum=params["momentum"], weight_decay=params["weight_decay"], fused=True)


class FastStep:
    """Run epochs of the training step on static buffers; ``graph=None`` captures on CUDA only."""

    def __init__(self, model, loader, optimizer, *, bf16: bool = False, graph: bool | None = None,
                 warmup_steps: int = 3):
        self.model, self.loader, self.opt = model, loader, optimizer
        dev = self.device = model.direction.device
        self.graph_on = dev.type == "cuda" if graph is None else graph
        if self.graph_on and dev.type != "cuda":
            raise LtKitError("a CUDA graph needs a CUDA device")
        b, self.steps = loader.batch_size, len(loader)
        self.idx = torch.zeros(b, dtype=torch.long, device=dev)
        self.dy = torch.zeros(b, dtype=torch.long, device=dev)
        self.dx = torch.zeros(b, dtype=torch.long, device=dev)
        self.flip = torch.zeros(b, dtype=torch.bool, device=dev)
        self.step_no = torch.zeros(1, dtype=torch.long, device=dev)
        self.mu = torch.zeros((), device=dev)
        self.losses = torch.zeros(self.steps, device=dev)
        self.correct = torch.zeros((), device=dev)
        self.amp = resolve_bf16(bf16, dev)
        self.warmup_steps, self.graph, self.phase, self.criterion = warmup_steps, None, None, None
        self.captures = 0
        loader._padded_pixels()                  # built now on the current stream, not inside a warm-up or capture
        for g in optimizer.param_groups:         # a resumed optimizer's state may carry a float lr or other flags
            if not torch.is_tensor(g["lr"]) or g["lr"].device != dev:
                # (a CPU lr tensor, as a checkpoint loads, would be read once by the fused kernel and frozen)
                g["lr"] = torch.tensor(float(g["lr"]), device=dev)
            g["fused"], g["foreach"] = True, False

    def _body(self) -> None:
        """Everything one training step does after its draws are in the buffers (captured as one graph)."""
        x = self.loader._normalise(self.loader.crop_flip(self.idx, self.dy, self.dx, self.flip))
        y = self.loader.labels[self.idx]
        amp = autocast(self.device, self.amp, cache_enabled=False)
        with amp:
            logits, feats = self.model(x)
        loss = self.criterion(logits.float(), y)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            d = self.model.direction
            d.copy_(update_direction(d, feats.detach().float().mean(0), self.mu))
            self.losses.index_copy_(0, self.step_no, loss.detach().view(1))
            self.correct += (logits.argmax(1) == y).sum()

    def _load(self, draws: dict, s: int) -> None:
        self.idx.copy_(draws["idx"][s])
        self.dy.copy_(draws["dy"][s])
        self.dx.copy_(draws["dx"][s])
        self.flip.copy_(draws["flip"][s])
        self.step_no.copy_(draws["step"][s:s + 1])

    def _warm(self, n: int) -> None:
        """``n`` real eager steps on a side stream (nothing of them is captured)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(n):
                self.opt.zero_grad(set_to_none=True)
                self._body()
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self._body()
        self.captures += 1

    def run_epoch(self, epoch: int, lr: float, mu: float, criterion, phase=None, bar=None) -> dict:
        """One epoch. ``phase`` (``methods.criterion_phase``) says when a new ``criterion`` object computes
        something else than the captured one; without it every new criterion object is recaptured. Returns
        mean loss and training accuracy, as ``train_one_epoch``."""
        self.model.train()
        if criterion is not self.criterion and (phase is None or phase != self.phase):
            # recapture (after fresh warm-up steps). Otherwise keep the captured criterion object: the graph reads
            # the device tensors of its closure (a log prior, LDAM margins), which must stay alive
            self.criterion, self.phase, self.graph = criterion, phase, None
        self.loader.set_epoch(epoch)
        draws = {k: v.to(self.device) for k, v in self.loader.epoch_draws().items()}      # one copy per epoch
        draws["step"] = torch.arange(self.steps, device=self.device)
        for g in self.opt.param_groups:
            g["lr"].fill_(lr)
        self.mu.fill_(mu)
        self.losses.zero_()
        self.correct.zero_()
        warm = 0
        for s in range(self.steps):
            self._load(draws, s)
            if not self.graph_on:
                self.opt.zero_grad(set_to_none=True)
                self._body()
            elif self.graph is not None:
                self.graph.replay()
            elif warm < self.warmup_steps:
                self._warm(1)
                warm += 1
            else:
                self._capture()                 # capturing records the step without running it
                self.graph.replay()
        if bar is not None:
            bar.update(self.steps)
        check_losses(self.losses, epoch)                            # the epoch's one host sync
        return {"loss": self.losses.mean().item(),
                "train_acc": (self.correct / float(self.steps * self.loader.batch_size)).item()}
