"""Label methods: how Ais annotations become what the networks learn, one module per method.

A method (:class:`.base.LabelMethod`) says what each single network learns, how ``pom shared
initialize`` builds the joint labels, and what the shared network learns, with which loss and
loop. :mod:`.registry` finds the method the configuration's ``label_method`` names; no other
module branches on the name. Adding a method is adding one module and one registry line.

* :mod:`.pom`: Pom's algorithm (the counterexample rule, joint labels from the single networks).
* :mod:`.painted`: every painted pixel teaches the single networks; paint overrides the joint labels.
* :mod:`.direct`: the shared network learns the paint alone; no single networks needed.
* :mod:`.targets`, :mod:`.joint`: the pure label arithmetic they share, and the single networks' predictions.
"""
