"""Training data on disk (Pom's layout): sampling phase 1, the painted code maps, the stacks, the records.

* :mod:`.sampling`: ``pom single initialize``: crops around Ais boxes, as Pom takes them.
* :mod:`.painted`: which ontology is painted at each pixel of a crop (every feature's paint).
* :mod:`.stacks`: the one reader and writer of the tif stacks.
* :mod:`.info`: the one reader of ``info.json`` records; the training voxel size.
* :mod:`.phase1`, :mod:`.phase2`: the stacks of each phase, loaded and shape-checked as a whole.
"""
