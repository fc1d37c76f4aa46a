"""Progress bars for long work: on a terminal only, never in CI logs or redirected output.

One rule for the whole project (:func:`show_progress`): stderr is a terminal and ``CI`` is not
set. Bars (:func:`progress_bar`) are tqdm bars on stderr that vanish when done.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def show_progress() -> bool:
    """Whether to draw progress: stderr is a terminal and ``CI`` is unset."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress_bar(total: int, desc: str) -> Any:
    """A tqdm bar over ``total`` items on stderr (disabled when :func:`show_progress` is false)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not show_progress(), leave=False, file=sys.stderr)
