"""Names a user gives to what lmo-dp creates: MLflow experiments and runs, Tune runs, folders.

An experiment name becomes a folder under ``storage_path`` (``<storage_path>/<experiment>``),
a run name a label in the MLflow UI, so one rule holds for both everywhere (``lmo-dp train``,
``sweep``, ``demo``, ``report --experiment``), checked before anything starts:

* 1 to :data:`MAX_NAME_LENGTH` (200) characters, not starting or ending with white space;
* not ``.`` or ``..``, and none of ``/ \\ ? * : " < > |`` (a name must not act as a path, and
  must be a valid folder name on every common file system);
* no control characters (newline, tab, NUL, escape, ...) and no Unicode line or paragraph
  separators.
"""

from __future__ import annotations

import unicodedata

from noise_search.errors import ParameterError, short_repr

#: Longest experiment or run name accepted (a file-name component may hold 255 bytes).
MAX_NAME_LENGTH = 200
#: Characters a name may not hold: path separators and what common file systems refuse.
FORBIDDEN_CHARACTERS = '/\\?*:"<>|'


def check_name(field: str, value: object) -> str:
    """``value`` if it is a usable experiment or run name (module docstring), else
    :class:`~noise_search.errors.ParameterError` naming ``field`` and the rule it breaks."""
    if not isinstance(value, str):
        raise ParameterError(field, f"must be a name (text), got {short_repr(value)}")
    if not value:
        raise ParameterError(field, "must be a name of 1 to 200 characters, got an empty one")
    if len(value) > MAX_NAME_LENGTH:
        raise ParameterError(field, f"must be at most {MAX_NAME_LENGTH} characters, got {len(value)}")
    for i, ch in enumerate(value):
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            raise ParameterError(
                field,
                f"must not contain control characters or line breaks, got {ch!r} at position {i + 1} "
                f"of {short_repr(value, 60)}",
            )
    bad = sorted(set(value) & set(FORBIDDEN_CHARACTERS))
    if bad:
        raise ParameterError(
            field, f"must be a plain name without {' '.join(FORBIDDEN_CHARACTERS)}, got {''.join(bad)!r} in {value!r}"
        )
    if value in (".", ".."):
        raise ParameterError(field, f"must be a plain name, not {value!r}")
    if value.strip() != value:
        raise ParameterError(field, f"must not start or end with white space, got {value!r}")
    return value
