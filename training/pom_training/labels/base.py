"""What a label method is: the interface every method module implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from pom_common.config import ProjectConfig

from ..data.phase2 import Phase2Data, Phase2Labels
from ..fitting.config import TrainConfig
from ..fitting.job import Job


class LabelMethod(ABC):
    """One way of turning Ais annotations into training targets, chosen by ``label_method``."""

    #: The configuration's ``label_method`` value.
    name: ClassVar[str]
    #: One line for reports (``make quality``).
    description: ClassVar[str]
    #: Whether the single networks are part of its workflow (``pom shared initialize`` needs them).
    uses_single_networks: ClassVar[bool]
    #: Whether its shared network carries the configuration's ``shared_model_z_smooth`` (a
    #: reproduction of Pom does not: Pom's outputs are not smoothed).
    smooths_z: ClassVar[bool] = True

    def workflow_note(self) -> str | None:
        """One line for ``pom single train`` and ``pom shared initialize`` where single networks are optional."""
        if self.uses_single_networks:
            return None
        return (f'label_method "{self.name}": the shared network learns from the painted labels (pom shared '
                "initialize, then pom shared train); single networks are not used for it: they are optional, "
                "for pom single test")

    @abstractmethod
    def check_config(self, config: ProjectConfig) -> None:
        """Refuse a configuration this method cannot work with, before ``pom single initialize``.

        Raises
        ------
        ConfigError
            Naming the key and the way out.
        """

    @abstractmethod
    def single_job(self, config: ProjectConfig, feature: str, counterexamples: bool, tc: TrainConfig) -> Job:
        """What ``feature``'s single network learns, from the phase-1 stacks.

        Raises
        ------
        ConfigError
            ``feature`` is not an ontology.
        InputError
            No training data for ``feature``, or the stacks are unusable.
        """

    @abstractmethod
    def joint_labels(self, config: ProjectConfig, selective: bool, device: int | None,
                     progress: bool) -> Phase2Labels:
        """``pom shared initialize``: the shared network's inputs and targets.

        Raises
        ------
        InputError
            No usable crops, or a single network or stack missing.
        ModelError
            A single network that does not fit the configuration.
        """

    @abstractmethod
    def shared_job(self, config: ProjectConfig, data: Phase2Data, tc: TrainConfig) -> Job:
        """What the shared network learns from the phase-2 stacks (already checked to be this method's)."""
