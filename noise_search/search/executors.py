"""Where the search's independent tasks run.

An :class:`Executor` takes tasks (``submit``) and returns their results in order (``gather``).
:class:`LocalExecutor` runs them in this process; the orchestrator's Ray executor runs the same
functions on the same inputs as Ray tasks, so the results are identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Executor(Protocol):
    """Runs independent tasks. ``submit`` may start a task at once; ``gather`` returns results in order."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def gather(self, handles: Sequence[Any], on_done: Callable[[int], None] | None = None) -> list[Any]: ...


@dataclass
class _Deferred:
    fn: Callable[..., Any]
    args: tuple[Any, ...]


class LocalExecutor:
    """Runs every task in this process, in ``gather`` order."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Deferred:
        return _Deferred(fn, args)

    def gather(self, handles: Sequence[_Deferred], on_done: Callable[[int], None] | None = None) -> list[Any]:
        out = []
        for i, h in enumerate(handles):
            out.append(h.fn(*h.args))
            if on_done is not None:
                on_done(i)
        return out
