"""Keras 3 model <-> editable graph, and parameter/MAC counting.

`ModelGraph.from_keras(model)` reads a Functional/Sequential model (nested sub-models
are inlined) into plain, editable data; `graph.to_keras()` builds a new model from it.
`count_model(model_or_graph)` counts parameters and MACs per node.
"""
from kerascompress.graph.counting import ModelCost, NodeCost, count_model
from kerascompress.graph.model_graph import ModelGraph, Node, Slot, TensorRef

__all__ = ["ModelCost", "ModelGraph", "Node", "NodeCost", "Slot", "TensorRef", "count_model"]
