"""The machine a run was measured on (CPU, cores, memory, load, torch and reference versions, device)
and the two facts the command's defaults read from it: the usable cores and the available memory."""
from __future__ import annotations

import os
import time

from benchmark.speed.config import BenchSettings


def machine_info(settings: BenchSettings) -> dict:
    import platform

    import torch

    from benchmark.speed.reference import reference_version

    info = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": settings.command(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": settings.threads,
        "device": settings.device,
        "vector_quantize_pytorch": reference_version(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "memory_total_bytes": meminfo_bytes("MemTotal"),
        "memory_available_at_start_bytes": meminfo_bytes("MemAvailable"),
        "memory_limit_bytes": settings.memory_limit_bytes,
        "timeout_s": settings.timeout_s,
        "step": "forward + backward of quantized.square().mean() + aux_loss; floor: forward z @ C^T only",
    }
    if settings.device.startswith("cuda"):
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(settings.device))
    return info


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


def meminfo_bytes(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
