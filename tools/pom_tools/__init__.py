"""Developer tools on top of the toolkit: the demo, the label-method comparison, synthetic projects.

``python -m pom_tools.demo`` (``make demo``) and ``python -m pom_tools.quality``
(``make quality``). They use ``pom_training`` and ``pom_common``; nothing in those
packages (or in ``pom_inference``) imports them.
"""
