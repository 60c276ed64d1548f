"""Named constants shared by training and inference."""

#: Channel name of the tomogram itself (Pom's convention).
DENSITY = "Density"
#: Name of the extra class of the shared model.
UNKNOWN = "Unknown"
#: Binning factor between tomogram voxels and network pixels (Pom bins 2x).
BIN_FACTOR = 2
#: Macromolecule channels are uint8 0..255; networks see v / 255 * 2 - 1.
CHANNEL_SCALE = 255.0
#: Header voxel sizes that mean "not set"; the configuration's apix is used instead.
UNSET_VOXEL_SIZES = (0.0, 1.0)
#: Largest z_sum accepted (a window of 257 slices is thicker than any lamella).
MAX_Z_SUM = 128
#: The most binned slices a shared model's output may be averaged over (``z_smooth``, odd).
MAX_Z_SMOOTH = 15
#: Name of the project configuration file (Pom's).
CONFIG_FILENAME = "project_configuration.json"
#: Version of the ONNX metadata layout written by export.
METADATA_VERSION = "1"
#: ONNX opset used for export (17: Softmax on one axis; ONNX Runtime 1.14 or newer).
ONNX_OPSET = 17

