"""Fitting a network: settings, one loop, its schedules, its feeds, checkpoints and devices (Keras).

* :mod:`.config`: :class:`~.config.TrainConfig`, the settings of one run (no TensorFlow).
* :mod:`.feeds`: how an epoch sees the crops (every rotation/flip of each, or seeded draws).
* :mod:`.loop`: the one training loop: a learning-rate schedule, and the best or the last epoch kept.
* :mod:`.checkpoints`: saving and loading ``.keras`` files, the depth check.
* :mod:`.devices`: the CPU or the GPUs asked for, never a silent fall-back.
* :mod:`.network`: build (or continue) a U-Net and fit it with a label method's job.
"""
