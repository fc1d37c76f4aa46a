"""Progress bars for long work: on a terminal only, never in CI logs or redirected output.

One rule for the whole project (:func:`show_progress`): stderr is a terminal and ``CI`` is not
set. Bars (:func:`progress_bar`) are tqdm bars on stderr that vanish when done. Without a
terminal, libraries draw none either (:func:`quiet_progress_bars`).
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


def quiet_progress_bars() -> None:
    """No library progress bars (Hugging Face's "Loading weights", hub downloads): for processes
    without a terminal. Set in the environment, so Ray workers started from here inherit it, and
    in the libraries when they are already imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
