"""Scoring and looking at results: the one home of Dice and IoU.

* :mod:`.metrics`: true/false positive counts, Dice, IoU, pooled per class (pure).
* :mod:`.truth`: calls from probabilities, and what counts as truth in annotations or dense labels (arrays).
* :mod:`.evaluate`: ``pom evaluate`` over files (models, tomograms, ``.scns``, label volumes).
* :mod:`.render`, :mod:`.preview`: PNG pictures of segmentations (``pom preview``).
"""
