"""Keras 3 model <-> editable graph, and parameter/MAC counting.

`ModelGraph.from_keras(model)` reads a Functional/Sequential model (nested sub-models
are inlined) into plain, editable data; `graph.to_keras()` builds a new model from it.
`count_model(model_or_graph)` counts parameters and MACs per node.
`find_channel_groups(graph)` finds the channels that must be removed together and
`prune_channels(graph, groups, keep)` removes them; `register_layer_rule` teaches both
about a custom layer class.
"""
from kerascompress.graph.channel_groups import (
    ChannelGroup,
    ChannelGroups,
    find_channel_groups,
)
from kerascompress.graph.counting import ModelCost, NodeCost, count_model
from kerascompress.graph.layer_rules import register_layer_rule
from kerascompress.graph.model_graph import ModelGraph, Node, Slot, TensorRef
from kerascompress.graph.prune_channels import prune_channels

__all__ = [
    "ChannelGroup", "ChannelGroups", "ModelCost", "ModelGraph", "Node", "NodeCost", "Slot", "TensorRef",
    "count_model", "find_channel_groups", "prune_channels", "register_layer_rule",
]
