"""What ``pom single initialize`` did: images per feature, boxes dropped and why, files skipped, crops."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Phase1Report:
    """What happened during sampling; printed as a table by the CLI."""

    images: dict[str, int] = field(default_factory=dict)
    annotated: dict[str, int] = field(default_factory=dict)
    tomograms: dict[str, set[str]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    #: Boxes dropped because of a configuration key: "z_sum", "ontology_annotation_box_size".
    dropped_by_key: dict[str, int] = field(default_factory=dict)
    unknown_features: dict[str, set[str]] = field(default_factory=dict)
    skipped_files: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    voxel_sizes: dict[str, float] = field(default_factory=dict)  # tomogram -> A, from its header
    #: feature -> [tomogram stem, z, x, y] of each crop, in stack order.
    crops: dict[str, list[list]] = field(default_factory=dict)
    #: [tomogram stem, z, x, y] of each extra crop (phase1/extra/), in stack order.
    extra_crops: list[list] = field(default_factory=list)
    #: title not in ontologies -> the ontology it matches when case and spaces are ignored.
    title_hints: dict[str, str] = field(default_factory=dict)
    #: Features Ais never named ("Unnamed feature 5") -> "<file> (<n> boxes)" entries.
    unnamed_features: dict[str, list[str]] = field(default_factory=dict)

    def table(self, ontologies: tuple[str, ...]) -> str:
        """Images, annotated images and tomograms per feature, as a text table."""
        width = max([len("feature")] + [len(o) for o in ontologies])
        lines = [f"{'feature':<{width}}  {'images':>7}  {'annotated':>9}  {'tomograms':>9}"]
        for o in ontologies:
            lines.append(f"{o:<{width}}  {self.images.get(o, 0):>7}  {self.annotated.get(o, 0):>9}  "
                         f"{len(self.tomograms.get(o, ())):>9}")
        return "\n".join(lines)

    def feature_notes(self) -> list[str]:
        """One line per feature title not used: not in ontologies (with a hint), or unnamed."""
        lines = []
        for title, files in sorted(self.unknown_features.items()):
            if title in self.unnamed_features:
                continue
            hint = self.title_hints.get(title)
            tip = f" (did you mean {hint!r}? titles must match exactly; rename it in Ais)" if hint else ""
            lines.append(f"not in ontologies: feature {title!r} in {', '.join(sorted(files))}{tip}")
        for title, where in sorted(self.unnamed_features.items()):
            lines.append(f"unnamed feature {title!r} in {', '.join(where)}: not used; give it a title in Ais")
        return lines
