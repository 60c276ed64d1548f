"""Defaults shared by both command-line programs, the configuration and the library.

Each value is written here once; options, dataclass fields and function signatures name it.
"""

#: Test-time augmentation runs averaged when nothing else is asked for (Pom's
#: ``shared_model_runs_per_volume``): 4 rotations, no flips.
TTA = 4
#: The TTA values a run accepts: 1..4 rotations, or 8 (the rotations, each with and without a flip).
TTA_RUNS = (1, 2, 3, 4, 8)
#: The values the configuration's ``shared_model_runs_per_volume`` accepts (Pom's: rotations only).
CONFIG_TTA_RUNS = (1, 2, 3, 4)
#: TTA of the single networks' predictions that ``pom shared initialize`` turns into joint labels.
JOINT_LABEL_TTA = 8
#: A work claim not refreshed for this long (seconds) is stale and taken over. NFS caches
#: attributes for up to 60 s (``actimeo``): twice that.
LEASE_SECONDS = 120.0
#: A worker with no progress for this long (seconds) stops refreshing its claims (a hung GPU call).
STALL_SECONDS = 1800.0
#: Probability above which a single-feature network calls its feature.
THRESHOLD = 0.5
