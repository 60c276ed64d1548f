"""tf2onnx's optimiser sequence with a fix for two of its bugs (issue #17): see :func:`optimizers`."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from tf2onnx import optimizer
from tf2onnx.optimizer.reshape_optimizer import ReshapeOptimizer
from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer


class SnapshotTransposeOptimizer(TransposeOptimizer):
    """``post_optimize_action`` walks a copy of the node list, so it skips no node."""

    _snapshot = False

    @property
    def nodes(self) -> Any:
        """The graph's nodes: a copy during the post pass, the live list otherwise."""
        nodes = self._g.get_nodes()
        return list(nodes) if self._snapshot else nodes

    def post_optimize_action(self) -> None:
        """tf2onnx's post pass over a snapshot of the nodes."""
        self._snapshot = True
        try:
            super().post_optimize_action()
        finally:
            self._snapshot = False


class OutputSafeReshapeOptimizer(ReshapeOptimizer):
    """Never rewrite a Reshape whose output is a graph output (its Squeeze would be lost)."""

    def _optimize_reshape(self, node: Any, graph: Any) -> Any:
        if set(node.output) & set(graph.outputs):
            return False
        return super()._optimize_reshape(node, graph)


def optimizers() -> OrderedDict[str, type]:
    """tf2onnx's optimiser sequence, with a fix for two of its bugs (issue #17).

    About one export in twenty of a single-feature network had a 5-D output (1, B, H, W, 1).
    Cause (tf2onnx 1.17). The channel-1 head ``Conv (NCHW) -> Transpose -> Sigmoid ->
    Identity -> graph output`` goes wrong in two steps:

    1. ``TransposeOptimizer.post_optimize_action`` replaces every Transpose that only moves
       a size-1 axis by a Reshape while it iterates over the graph's *live* node list
       (``graph.get_nodes()``): each replacement removes the Transpose from the list being
       iterated, so the node right after it is skipped. That list is rebuilt after every
       optimiser pass from ``set(nodes)`` (``Graph.extract_sub_graph_nodes``), and Node
       objects hash by ``id()``, i.e. by memory address: the order, hence which node is
       skipped, changes from one conversion to the next and with whatever ran before in the
       process (the heap's state); PYTHONHASHSEED does not fix it. In the tiny U-Nets of
       the issue about 15 of the ~250 nodes are such Transposes, so the head's Transpose
       follows one of them about one time in twenty; it then survives the first optimiser
       round, and ``IdentityOptimizer`` makes it the producer of the graph output.
    2. In the next round it becomes ``Reshape(x, Gather(Shape(x)))`` producing the graph
       output, and ``ReshapeOptimizer`` rewrites that as ``Reshape(x, [1, -1, 0, 0, 1])``
       followed by ``Squeeze(axes=[0])``, wired in with ``insert_node_on_output``, which
       re-points the consumers of the Reshape but not the graph output: the Squeeze is
       dropped as unused and the model returns (1, B, H, W, 1). The parity check caught it.

    Fix: the post pass iterates over a copy of the node list (every such Transpose becomes
    a Reshape in the first round, whatever the order), and the reshape optimiser leaves a
    Reshape that produces a graph output alone. The shared network (two or more output
    channels) has no such head Transpose and was never affected.
    """
    replace = {TransposeOptimizer: SnapshotTransposeOptimizer, ReshapeOptimizer: OutputSafeReshapeOptimizer}
    return OrderedDict((name, replace.get(cls, cls)) for name, cls in optimizer._get_optimizers().items())
