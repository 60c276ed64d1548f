"""Feature titles as typed in Ais: hints for near misses, and the features Ais never named.

Matching stays exact, as Pom's: these only explain why a feature was not used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: Titles Ais gives a new feature before it is named ("Unnamed feature 3").
UNNAMED = re.compile(r"^\s*unnamed feature\b.*$", re.IGNORECASE)


def _squash(title: str) -> str:
    """A title with case and every space ignored (for hints only; matching stays exact)."""
    return "".join(title.split()).casefold()


def title_hint(title: str, ontologies: Sequence[str]) -> str | None:
    """The ontology ``title`` matches only when case and spaces are ignored, else None.

    Parameters
    ----------
    title : a feature title as typed in Ais, e.g. ``"Lipid Droplet"``.
    ontologies : the configuration's ontologies, e.g. ``("Lipid droplet",)``.

    Returns
    -------
    The ontology (``"Lipid droplet"``), or None when ``title`` matches one exactly or none
    even then.
    """
    if title in ontologies:
        return None
    squashed = _squash(title)
    for o in ontologies:
        if _squash(o) == squashed:
            return o
    return None


def is_unnamed(title: str) -> bool:
    """Whether ``title`` is Ais's placeholder for a feature never named ("Unnamed feature 5")."""
    return bool(UNNAMED.match(title)) or not title.strip()
