"""The label methods by name: the configuration's ``label_method`` chooses one here, and only here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pom_common.config import ProjectConfig
from pom_common.constants import CONFIG_FILENAME
from pom_common.errors import InputError
from pom_common.layout import ProjectLayout

from .base import LabelMethod
from .direct import DirectMethod
from .painted import PaintedMethod
from .pom import PomMethod

#: Every label method, by the name ``label_method`` gives it (the configuration accepts these names).
METHODS: Mapping[str, LabelMethod] = {m.name: m for m in (PomMethod(), PaintedMethod(), DirectMethod())}
#: The method of phase-2 stacks without a record: Pom made them (or a version before the label methods).
UNRECORDED = PomMethod.name


def method_for(config: ProjectConfig) -> LabelMethod:
    """The method ``config.label_method`` names (the configuration was validated against :data:`METHODS`)."""
    return METHODS[config.label_method]


def check_made_by(config: ProjectConfig, info: Mapping[str, Any]) -> None:
    """Refuse to train on phase-2 stacks made by another ``label_method`` than the configuration's.

    ``info`` is the stacks' record; stacks without one were made by :data:`UNRECORDED`.

    Raises
    ------
    InputError
        The stacks' method is not ``config.label_method``; the message names both fixes.
    """
    made = info.get("label_method", UNRECORDED)
    if made == config.label_method:
        return
    by = "by Pom's method (no info.json: Pom or an older version made them)" if "label_method" not in info else \
        f"with label_method {made!r}"
    raise InputError(f"{ProjectLayout.of(config).phase2}: the phase 2 stacks were made {by}, the configuration's "
                     f"label_method is {config.label_method!r}: run 'pom shared initialize' again (after 'pom single "
                     f"initialize' for painted labels), or set \"label_method\": {json.dumps(made)} in "
                     f"{CONFIG_FILENAME} to train on them as they are")
