"""One error type for everything a user can get wrong; the CLI prints it as a single line."""
import re

_WORKER_LINE = re.compile(r"^[\w.]*LtKitError: (.+)$")


class LtKitError(Exception):
    """A bad input (parameter, data, checkpoint, run dir) with a message that says what to do.

    ``every_rank``: under torchrun every process meets this same error (a parameter, the run dir, a NaN
    loss after the all-reduce), so only rank 0 prints it."""

    every_rank: bool = False


class NonFiniteLossError(LtKitError):
    """The training loss became NaN or inf (checked after the all-reduce: every rank stops together)."""

    every_rank = True


def check_losses(losses, epoch: int) -> None:
    """Raise ``NonFiniteLossError`` naming the first non-finite entry of an epoch's per-step ``losses`` (a
    tensor; one host sync). The eager loop and the fast step both call it once per epoch."""
    import torch
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        s = int(bad[0])
        raise NonFiniteLossError(f"loss became {losses[s].item()} at epoch {epoch}, step {s + 1}/{len(losses)}; "
                                 "lower lr, check the data for NaN/inf, or resume from the last checkpoint")


def on_every_rank(e: LtKitError) -> LtKitError:
    """Mark ``e`` as met by every process alike (see ``LtKitError.every_rank``); returns it."""
    e.every_rank = True
    return e


def worker_error(e: LtKitError) -> LtKitError:
    """The one-line error a DataLoader worker raised. torch re-raises it in the main process as the same type
    whose message is the worker's whole traceback; the last line holds the original message."""
    lines = str(e).rstrip().splitlines()
    if len(lines) > 1 and "DataLoader worker" in lines[0]:
        m = _WORKER_LINE.match(lines[-1].strip())
        if m:
            out = type(e)(m.group(1))
            out.every_rank = e.every_rank
            return out
    return e
