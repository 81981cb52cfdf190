"""bfloat16 autocast on any device, and where it pays.

``bf16=true`` runs the backbone under ``torch.autocast(device, bfloat16)``: on CUDA and on the CPU alike. The
pooled features, the head, the loss, the feature caches and the momentum direction stay float32 (``models.py``
pools in float32 and runs the head with autocast off), so TDE's maths never sees bf16 rounding.

``bf16=auto`` is the default: it turns bf16 on where it is fast, a CPU with native bf16 instructions (AVX512-BF16
or AMX on x86, the BF16 extension on Arm), 1.5-2.0x there. It became the default by a rule fixed before the
results (docs/performance.md, "bf16 at 200 epochs"): over two 200-epoch CIFAR-10-LT seed pairs bf16 stayed within
the bound at TDE's and logit adjustment's rules. CUDA stays float32 under ``auto`` until a GPU run shows bf16
equal; ``bf16=true`` asks for it there. ``bf16=false`` is float32 everywhere (the 200-epoch campaign's rows pin
it). On a CPU without native bf16 oneDNN emulates it, which is usually slower than float32, so ``auto`` keeps
float32 there and ``bf16=true`` runs as asked and says so once.
"""
from __future__ import annotations

import contextlib
import functools
import platform
import warnings

import torch

from lt_kit.errors import LtKitError

EMULATED_NOTE = ("bf16=true on a CPU without native bf16 instructions: oneDNN emulates bfloat16, which is usually "
                 "slower than float32 here; set bf16=false (or auto) for float32")
_warned: set[str] = set()


@functools.cache
def native_bf16_cpu() -> bool:
    """True when this CPU computes bfloat16 in hardware (x86 AVX512-BF16 / AMX-BF16, Arm BF16)."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:                # a probe missing on this build or platform: try the next one
            pass
    if platform.machine().lower() in ("aarch64", "arm64"):
        try:
            with open("/proc/cpuinfo") as f:
                return any(line.startswith("Features") and " bf16" in line for line in f)
        except OSError:
            return False
    return False


def check_bf16(value) -> bool | str:
    """``true``, ``false`` or ``"auto"``; anything else is an error naming the three."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise LtKitError(f"parameter 'bf16' must be true, false or auto, got {value!r}")


def resolve_bf16(value, device: torch.device | str) -> bool:
    """The precision a run on ``device`` uses for ``bf16=value``: ``auto`` -> True on a CPU with native bf16,
    False elsewhere (CUDA keeps float32 until a GPU run shows bf16 equal); ``true`` on an emulating CPU warns
    once per process."""
    dev = torch.device(device)
    value = check_bf16(value)
    if value == "auto":
        return dev.type == "cpu" and native_bf16_cpu()
    if value and dev.type == "cpu" and not native_bf16_cpu() and "cpu" not in _warned:
        _warned.add("cpu")
        warnings.warn(EMULATED_NOTE, stacklevel=2)
    if value and dev.type not in ("cpu", "cuda"):
        raise LtKitError(f"bf16=true runs on cpu or cuda, not on {dev.type}; set bf16=false")
    return bool(value)


def autocast(device: torch.device, bf16: bool, **kwargs):
    """The backbone's precision context: bf16 autocast on ``device`` when ``bf16``, else nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, **kwargs)
