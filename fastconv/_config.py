"""``show_config()``: what this installation of fastconv is and will do."""
import platform
import sys

import numpy as np

from . import _backends, _threads
from ._version import __version__


def config():
    """Return fastconv's configuration as a dict (what :func:`show_config` prints)."""
    info = {
        "fastconv": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "default backend": _backends.get_backend(),
        "threads": _threads.get_num_threads(),
        "available cores": _threads.available_cores(),
        "backends": {},
    }
    for status in _backends.backends():
        entry = {"available": status.available}
        if status.available:
            module = _backends.driver(status.name)
            entry.update(module.info())
        else:
            entry["reason"] = status.reason
        info["backends"][status.name] = entry
    return info


def show_config(file=None):
    """Print version, backends (and why any is unavailable), OpenMP, SIMD path and threads."""
    info = config()
    lines = []
    for key, value in info.items():
        if key != "backends":
            lines.append(f"{key + ':':18s} {value}")
    lines.append("backends:")
    for name, entry in info["backends"].items():
        state = "available" if entry["available"] else "unavailable: " + entry["reason"]
        lines.append(f"  {name:8s} {state}")
        for k, v in entry.items():
            if k not in ("available", "reason"):
                lines.append(f"    {k + ':':16s} {v}")
    print("\n".join(lines), file=file or sys.stdout)
