"""Shared bits of the bench scripts: what machine a figure came from, how busy it was, where results go.

A benchmark on a shared machine is only as good as its note on contention, so :class:`CpuLoad` measures the
CPU time other processes used while the benchmark ran (from ``/proc/stat``, minus this process and its
children), and the markdown header states it.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                 # run as `python bench/x.py` from a checkout without installing
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """CPU model, cores, threads, library versions and the accelerator, for the results files."""
    import torchvision
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _busy_and_total_s() -> tuple[float, float] | None:
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)              # idle + iowait
    return (sum(vals[:8]) - idle) / hz, sum(vals[:8]) / hz


def _own_cpu_s() -> float:
    t = os.times()                                                  # children: DataLoader workers once reaped
    return t.user + t.system + t.children_user + t.children_system


class CpuLoad:
    """Context manager: average cores used by *other* processes while the block ran (Linux; else None)."""

    def __enter__(self) -> "CpuLoad":
        self._t0, self._busy0, self._own0 = time.perf_counter(), _busy_and_total_s(), _own_cpu_s()
        self.others_cores: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        busy1, wall = _busy_and_total_s(), time.perf_counter() - self._t0
        if self._busy0 is None or busy1 is None or wall <= 0:
            return
        others = (busy1[0] - self._busy0[0]) - (_own_cpu_s() - self._own0)
        self.others_cores = round(max(0.0, others) / wall, 2)


def contention_note(others_cores: float | None, note: str = "") -> str:
    """One line for the markdown header: the user's note, else what ``CpuLoad`` measured."""
    measured = "" if others_cores is None else (
        f"other processes used {others_cores:.2f} of {os.cpu_count()} cores on average during the run")
    if note:
        return f"{note} ({measured})" if measured else note
    if others_cores is not None and others_cores > 0.25:
        return f"contended: {measured}"
    return f"quiet: {measured}" if measured else "contention not measured"


def median(xs) -> float:
    return float(statistics.median(xs))


def write_results(out_dir: str | Path, name: str, data: dict, markdown: str) -> list[Path]:
    """Write ``<out_dir>/<name>.json`` and ``<name>.md``; returns the two paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(data, indent=2) + "\n")
    paths[1].write_text(markdown.rstrip() + "\n")
    return paths


def machine_lines(info: dict, contention: str) -> list[str]:
    """Markdown bullet lines naming the machine."""
    dev = info.get("gpu", info["device"])
    return [f"- Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
            f"(torchvision {info['torchvision']}), {info['torch_threads']} torch threads, device {dev}",
            f"- Load: {contention}"]


def threads_and_device(parser, args) -> torch.device:
    """Apply ``--threads`` and resolve ``--device`` the way lt_kit does; a bad device is a usage error."""
    from lt_kit.errors import LtKitError
    from lt_kit.training.build import resolve_device
    torch.set_num_threads(args.threads)
    try:
        return resolve_device(args.device)
    except LtKitError as e:
        parser.error(str(e))
