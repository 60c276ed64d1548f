"""The phase-1 stacks as one value: every feature's crops, labels and painted codes, shape-checked.

The one loader of ``training_datasets/phase1/``: every label method reads its crops here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pom_common.config import ProjectConfig
from pom_common.layout import PAINTED, ProjectLayout

from .stacks import check_shape, read_channels, read_codes, read_stack


@dataclass(frozen=True)
class Phase1Data:
    """Pom's phase-1 stacks and (when asked for) the painted code maps, per feature."""

    ontologies: tuple[str, ...]
    x: dict[str, np.ndarray]  # feature -> (N, h, w, C) network inputs
    y: dict[str, np.ndarray]  # feature -> (N, h, w) Pom's label (own feature, 0..1)
    codes: dict[str, np.ndarray]  # feature -> (N, h, w) uint8 painted codes (.painted); {} without paint
    extra_x: np.ndarray | None = None  # (M, h, w, C) the extra crops around the boxes (phase1/extra/)
    extra_codes: np.ndarray | None = None  # (M, h, w) their painted codes

    @property
    def features(self) -> list[str]:
        """Features with training crops, in ontology order."""
        return [o for o in self.ontologies if o in self.x]


def load_phase1(config: ProjectConfig, paint: bool, features: Sequence[str] | None = None,
                extra: bool = False) -> Phase1Data:
    """Read the phase-1 stacks of ``features`` (default: every ontology that has them).

    Parameters
    ----------
    paint : read the painted code maps too.
    features : these features, each of which must have stacks; None: every ontology with a label stack.
    extra : read the extra crops (``phase1/extra/``) too, when there are any (they always have codes).

    Raises
    ------
    InputError
        A stack missing, unreadable, or out of step with its feature's label stack (the message
        names the file and says to run ``pom single initialize`` again).
    """
    layout = ProjectLayout.of(config)
    if features is None:
        available = set(layout.phase1_features())
        features = [o for o in config.ontologies if o in available]
    xs, ys, codes = {}, {}, {}
    for o in features:
        label = layout.phase1_label(o)
        ys[o] = read_stack(label)
        if paint:
            codes[o] = read_codes(layout.phase1_painted(o))
        xs[o] = read_channels([layout.phase1_stack(o, c) for c in config.macromolecules], ys[o].shape, label)
        if paint:
            check_shape(layout.phase1_painted(o), codes[o].shape, label, ys[o].shape)
    extra_x = extra_codes = None
    if extra:
        painted_extra = layout.phase1_extra(PAINTED)
        extra_codes = read_codes(painted_extra)
        extra_x = read_channels([layout.phase1_extra(c) for c in config.macromolecules], extra_codes.shape,
                                painted_extra)
    return Phase1Data(tuple(config.ontologies), xs, ys, codes, extra_x, extra_codes)
