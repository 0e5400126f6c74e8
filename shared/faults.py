"""Named crash points for the fault-injection suite; inert unless ``SANDBOX_FAULT_DIR`` is set.

A test arms a point by creating ``<fault dir>/<point>`` containing ``once`` (the first process to
reach it dies) or ``always``. The process kills itself with SIGKILL, exactly as an OOM killer or a
node failure would, at a place no real signal could be timed to hit.
"""

from __future__ import annotations

import logging
import os
import signal

from shared.config import Settings

logger = logging.getLogger(__name__)


def crash_point(settings: Settings, name: str) -> None:
    """Die here if the point is armed; do nothing otherwise (the production case)."""
    if settings.fault_dir is None:
        return
    marker = settings.fault_dir / name
    try:
        mode = marker.read_text().strip()
    except FileNotFoundError:
        return
    if mode == "once":
        try:
            marker.unlink()
        except FileNotFoundError:
            return  # another process took this one
    logger.warning("fault point %s reached: killing this process", name)
    os.kill(os.getpid(), signal.SIGKILL)
