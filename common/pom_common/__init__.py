"""Common core of the Pom toolkit: configuration, MRC I/O, z-filter, Ais reader, work queue.

Importing this package does nothing but define names; it never imports TensorFlow or
onnxruntime.
"""

from .config import ProjectConfig, load_config, validate_config
from .errors import ConfigError, InputError, LockError, ModelError, PomError
from .mrcio import Volume, read_volume, write_volume
from .scns import Annotation, Feature, ScnsError, read_scns
from .zfilter import zfilter_bin

__version__ = "0.1.0"

__all__ = [
    "Annotation", "ConfigError", "Feature", "InputError", "LockError", "ModelError", "PomError",
    "ProjectConfig", "ScnsError", "Volume", "load_config", "read_scns", "read_volume",
    "validate_config", "write_volume", "zfilter_bin", "__version__",
]
