"""Settings of one training run, derived from the project configuration (no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass

from pom_common.config import ProjectConfig


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (derived from the project configuration)."""

    epochs: int
    batch_size: int
    base_filters: int
    depth: int
    learning_rate: float = 1e-3  # Adam; Pom used 2.5e-5, which needs far more epochs
    seed: int = 0
    #: Seeded draws only (the stable plan): intensity, noise and blur augmentation of the inputs.
    augment: bool = False
    #: Seeded draws only: at least this many draws per epoch (a few boxes still make enough steps).
    min_draws: int = 0
    #: Networks trained with seeds seed, seed + 1000, ... whose probabilities are averaged (one model).
    members: int = 1

    @classmethod
    def single(cls, config: ProjectConfig) -> TrainConfig:
        """Settings of a single-feature network's training."""
        return cls(config.single_model_epochs, config.single_model_batch_size, config.model_base_filters,
                   config.model_depth)

    @classmethod
    def shared(cls, config: ProjectConfig) -> TrainConfig:
        """Settings of the shared network's training."""
        return cls(config.shared_model_epochs, config.shared_model_batch_size, config.model_base_filters,
                   config.model_depth, augment=config.shared_model_augment,
                   min_draws=config.shared_model_min_draws, members=config.shared_model_members)
