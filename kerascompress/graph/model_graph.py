"""An editable graph of a Keras 3 Functional or Sequential model, and its rebuild.

Why: pruning, low-rank decomposition and friends need to change layer widths and
insert or drop layers. Keras models are immutable once built, so we read the model
into plain data (configs + numpy weights + wiring), let passes edit that, and build a
brand-new model from it. The source model is only read, never mutated.

Reading (`ModelGraph.from_keras`)
  * Supported: Functional models, Sequential models, and any nesting of the two
    (a sub-model used as a layer, also called several times). A subclassed model used
    as a layer stays one opaque node (its channels are not followed; it must be
    re-creatable from its config); a subclassed model at the top is refused with
    `UnsupportedModelError` (the pipeline wraps it first, see `models.subclassed`).
  * Nested sub-models are FLATTENED: their layers are inlined into the outer graph so
    that edits (e.g. a channel group) can cross sub-model boundaries. The rebuilt
    model is therefore flat. A layer keeps its own name unless that name is already
    taken in the flat graph; then it becomes ``f"{submodel}_{layer}"`` (plus a numeric
    suffix if that clashes too; Keras forbids "/" in names).
    ``ModelGraph.layer_paths`` maps each original layer path ("sub/inner/layer" with
    "/" between nesting levels; a top-level layer's path is its name) to its layer
    name in the graph; ``ModelGraph.nodes_of_layer`` gives that layer's nodes.
  * A call of a nested model with an explicit ``training=True/False`` is pushed down
    to every inlined layer that takes a ``training`` argument and did not set one.
  * One `Node` per layer call. A layer called once gives a node named like the layer;
    a layer called k > 1 times (shared weights) gives nodes ``f"{layer}@{i}"``,
    i = 0..k-1, which share one ``config`` dict and one ``weights`` list (edit them once).
  * Keras ops used directly on symbolic tensors (``keras.ops.add(a, b)``) become nodes
    too; they have no weights and are rebuilt by copying the (stateless) op.

Rebuilding (`ModelGraph.to_keras`)
  Each layer is created with ``type(layer).from_config(config)`` (``build_config`` is
  dropped, so changed widths build fine), called in topological order on fresh
  ``keras.Input`` tensors with the recorded call structure (nested lists, kwargs such
  as ``training`` or ``mask``), and the weights are set. The result is always a
  Functional model (also for a Sequential source) with the source's input/output names
  and structure. Lambda layers are rebuilt from their Python function.
"""
from __future__ import annotations

import copy
import dataclasses
import heapq
import inspect
from typing import Any, Iterable, Optional

import keras
import numpy as np

from kerascompress.errors import UnsupportedModelError

try:  # Keras-internal classes; used only for isinstance checks.
    from keras.src.models.functional import Functional as _Functional
    from keras.src.ops.operation import Operation as _Operation
except ImportError:  # pragma: no cover
    _Functional = keras.Model
    _Operation = keras.layers.Layer

_SUPPORTED = (
    "kerascompress reads Keras 3 Functional and Sequential models, including "
    "sub-models (Functional or Sequential) used as layers at any depth."
)


@dataclasses.dataclass
class TensorRef:
    """One output tensor of a node."""

    node: str
    index: int = 0


@dataclasses.dataclass(frozen=True)
class Slot:
    """Placeholder in a recorded call structure: the ``index``-th tensor in ``Node.inputs``."""

    index: int


@dataclasses.dataclass(eq=False)
class Node:
    """One call of one layer (or Keras op), as editable data."""

    name: str
    layer_name: str
    class_name: str
    config: dict
    weights: list
    inputs: list
    output_shapes: list
    input_shapes: list
    layer: Any = None  # the ORIGINAL layer object (or a template): read-only
    call_args: Any = None  # tuple with Slot placeholders; None -> derived from inputs
    call_kwargs: dict = dataclasses.field(default_factory=dict)
    weight_names: list = dataclasses.field(default_factory=list)  # e.g. ["kernel", "bias"]
    path: str = ""  # original layer path ("sub/layer"); "" for nodes added by passes
    output_dtypes: list = dataclasses.field(default_factory=list)

    @classmethod
    def create(
        cls,
        layer: keras.layers.Layer,
        inputs: Optional[list] = None,
        weights: Optional[list] = None,
        name: Optional[str] = None,
        output_shapes: Optional[list] = None,
    ) -> "Node":
        """A new node from an unbuilt template layer (e.g. ``keras.layers.Dense(8)``).

        The template is only used for its class and config. ``inputs`` left empty is
        wired automatically by `ModelGraph.replace_node`.
        """
        name = name or layer.name
        cfg = copy.deepcopy(layer.get_config())
        cfg["name"] = name
        return cls(
            name=name,
            layer_name=name,
            class_name=type(layer).__name__,
            config=cfg,
            weights=[np.array(w, copy=True) for w in (weights or [])],
            inputs=list(inputs or []),
            output_shapes=list(output_shapes or []),
            input_shapes=[],
            layer=layer,
        )

    @property
    def is_input(self) -> bool:
        return self.class_name == "InputLayer"

    def call_structure(self) -> tuple[Any, dict]:
        """(args, kwargs) with `Slot` placeholders for the input tensors."""
        if self.call_args is not None:
            return self.call_args, self.call_kwargs
        if len(self.inputs) == 1:
            return (Slot(0),), dict(self.call_kwargs)
        return ([Slot(i) for i in range(len(self.inputs))],), dict(self.call_kwargs)


@dataclasses.dataclass
class _Scope:
    """State while inlining one (sub-)model call."""

    env: dict  # id(KerasTensor) -> TensorRef
    path: str  # "" at top level, "sub/" inside a sub-model
    training: Optional[bool]  # pushed down from an explicit training= on the call


class ModelGraph:
    """Editable graph of a model. ``nodes`` is kept in topological order."""

    def __init__(self, name: str = "model"):
        self.nodes: dict[str, Node] = {}
        self.inputs: list[str] = []
        self.outputs: list[TensorRef] = []
        self.name = name
        self.layer_paths: dict[str, str] = {}
        # Structures with Slot(i) placeholders into self.inputs / self.outputs.
        self.inputs_struct: Any = None
        self.outputs_struct: Any = None

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_keras(cls, model: keras.Model) -> "ModelGraph":
        """Read a Functional/Sequential model (nesting allowed) without changing it."""
        top = _graph_model(model, where="the model")
        g = cls(name=model.name)
        reader = _Reader(g)
        scope = _Scope(env={}, path="", training=None)
        for t in top.inputs:
            op, idx, _ = t._keras_history
            node = op._inbound_nodes[idx]
            reader.add_input(op, node, scope)
        reader.inline(top, scope, model)
        g.inputs = [scope.env[id(t)].node for t in top.inputs]
        g.inputs_struct = _map_leaves(
            top._inputs_struct, lambda t: Slot([id(x) for x in top.inputs].index(id(t)))
        )
        out_ids = [id(t) for t in top.outputs]
        g.outputs = [scope.env[i] for i in out_ids]
        g.outputs_struct = _map_leaves(top._outputs_struct, lambda t: Slot(out_ids.index(id(t))))
        reader.finish()
        return g

    # ---------------------------------------------------------------- rebuilding
    def to_keras(self, name: Optional[str] = None) -> keras.Model:
        """A new Functional model with new layers and copies of the graph's weights."""
        model, layers = self._build_symbolic(name)
        for layer_name, (layer, node) in layers.items():
            if node.weights or getattr(layer, "weights", None):
                try:
                    layer.set_weights([np.asarray(w) for w in node.weights])
                except ValueError as e:
                    raise ValueError(
                        f"Weights of layer '{layer_name}' do not fit its config: {e}"
                    ) from e
        return model

    def refresh_shapes(self) -> None:
        """Recompute every node's input/output shapes (after width edits)."""
        _, _, tensors = self._build_symbolic(None, return_tensors=True)
        for n in self.nodes.values():
            outs = tensors[n.name]
            n.output_shapes = [tuple(t.shape) for t in outs]
            n.output_dtypes = [str(t.dtype) for t in outs]
            n.input_shapes = [tuple(tensors[r.node][r.index].shape) for r in n.inputs]

    def _build_symbolic(self, name, return_tensors=False):
        order = self.topological_order()
        tensors: dict[str, list] = {}
        layers: dict[str, tuple] = {}
        for nname in order:
            node = self.nodes[nname]
            if node.is_input:
                tensors[nname] = [_make_input(node)]
                continue
            if node.layer_name not in layers:
                layers[node.layer_name] = (_make_layer(node), node)
            layer = layers[node.layer_name][0]
            flat = [tensors[r.node][r.index] for r in node.inputs]
            args, kwargs = node.call_structure()
            fill = lambda s: flat[s.index]  # noqa: E731
            out = layer(*_map_slots(args, fill), **_map_slots(kwargs, fill))
            tensors[nname] = keras.tree.flatten(out)
        ins = [tensors[n][0] for n in self.inputs]
        outs = [tensors[r.node][r.index] for r in self.outputs]
        in_struct = _map_slots(self.inputs_struct, lambda s: ins[s.index]) if self.inputs_struct is not None else ins
        out_struct = _map_slots(self.outputs_struct, lambda s: outs[s.index]) if self.outputs_struct is not None else outs
        model = keras.Model(in_struct, out_struct, name=name or self.name)
        if return_tensors:
            return model, layers, tensors
        return model, layers

    # ------------------------------------------------------------------ queries
    def consumers(self, node_name: str) -> list[tuple[str, int]]:
        """(consumer node, position in its inputs) for every use of ``node_name``'s outputs."""
        return [
            (n.name, i)
            for n in self.nodes.values()
            for i, r in enumerate(n.inputs)
            if r.node == node_name
        ]

    def producers(self, node_name: str) -> list[TensorRef]:
        return list(self.nodes[node_name].inputs)

    def nodes_of_layer(self, layer_name: str) -> list[str]:
        return [n.name for n in self.nodes.values() if n.layer_name == layer_name]

    def node_for_path(self, path: str) -> list[str]:
        """Nodes of the layer at an original path such as "backbone/conv1"."""
        return self.nodes_of_layer(self.layer_paths[path])

    def topological_order(self) -> list[str]:
        """Node names, producers first; ties keep the current dict order."""
        indeg = {n: 0 for n in self.nodes}
        users: dict[str, list[str]] = {n: [] for n in self.nodes}
        for n in self.nodes.values():
            for p in {r.node for r in n.inputs}:
                if p not in self.nodes:
                    raise ValueError(f"Node '{n.name}' reads missing node '{p}'.")
                indeg[n.name] += 1
                users[p].append(n.name)
        pos = {n: i for i, n in enumerate(self.nodes)}
        ready = sorted((n for n, d in indeg.items() if d == 0), key=pos.get)
        order = []
        heap = [(pos[n], n) for n in ready]
        heapq.heapify(heap)
        while heap:
            _, n = heapq.heappop(heap)
            order.append(n)
            for u in users[n]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    heapq.heappush(heap, (pos[u], u))
        if len(order) != len(self.nodes):
            raise ValueError("The graph has a cycle.")
        return order

    def sort(self) -> None:
        """Reorder ``nodes`` topologically."""
        self.nodes = {n: self.nodes[n] for n in self.topological_order()}

    # ------------------------------------------------------------------ editing
    def copy(self) -> "ModelGraph":
        """Deep copy of configs, weights and wiring (shared layers stay shared)."""
        memo: dict = {}
        for n in self.nodes.values():  # never copy Keras objects
            if n.layer is not None:
                memo[id(n.layer)] = n.layer
        g = ModelGraph(self.name)
        g.nodes = copy.deepcopy(self.nodes, memo)
        g.inputs = list(self.inputs)
        g.outputs = copy.deepcopy(self.outputs)
        g.layer_paths = dict(self.layer_paths)
        g.inputs_struct = copy.deepcopy(self.inputs_struct)
        g.outputs_struct = copy.deepcopy(self.outputs_struct)
        return g

    def rewire(self, old: TensorRef, new: TensorRef, exclude: Iterable[str] = ()) -> None:
        """Make every reader of tensor ``old`` (and the graph outputs) read ``new``."""
        exclude = set(exclude)
        for n in self.nodes.values():
            if n.name in exclude:
                continue
            n.inputs = [
                TensorRef(new.node, new.index) if (r.node == old.node and r.index == old.index) else r
                for r in n.inputs
            ]
        self.outputs = [
            TensorRef(new.node, new.index) if (r.node == old.node and r.index == old.index) else r
            for r in self.outputs
        ]

    def unique_name(self, base: str) -> str:
        taken = set(self.nodes) | {n.layer_name for n in self.nodes.values()}
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    def add_node(self, node: Node, after: Optional[str] = None) -> Node:
        """Insert ``node`` (its inputs must be set) right after node ``after`` (default: end)."""
        if node.name in self.nodes:
            raise ValueError(f"Node name '{node.name}' already exists.")
        items = list(self.nodes.items())
        pos = len(items) if after is None else [k for k, _ in items].index(after) + 1
        items.insert(pos, (node.name, node))
        self.nodes = dict(items)
        return node

    def replace_node(
        self, name: str, new_nodes: list[Node], outputs: Optional[list[TensorRef]] = None
    ) -> None:
        """Replace node ``name`` by ``new_nodes`` (e.g. Dense -> Dense, Dense).

        A new node with empty ``inputs`` is wired automatically: the first one reads
        the old node's inputs, later ones read output 0 of the previous new node.
        Readers of the old node's output k then read ``outputs[k]`` (default: output k
        of the last new node). The new nodes take the old node's place in the order.
        """
        old = self.nodes[name]
        prev: Optional[Node] = None
        for nn in new_nodes:
            if not nn.inputs:
                nn.inputs = list(old.inputs) if prev is None else [TensorRef(prev.name, 0)]
                if prev is None and nn.call_args is None:
                    nn.call_args = copy.deepcopy(old.call_args)
                    nn.call_kwargs = {**_accepted_kwargs(nn, old.call_kwargs), **nn.call_kwargs}
            prev = nn
        n_out = max(1, len(old.output_shapes))
        outputs = outputs or [TensorRef(new_nodes[-1].name, k) for k in range(n_out)]
        items = []
        for k, v in self.nodes.items():
            if k == name:
                for nn in new_nodes:
                    if nn.name in self.nodes and nn.name != name:
                        raise ValueError(f"Node name '{nn.name}' already exists.")
                    items.append((nn.name, nn))
            else:
                items.append((k, v))
        self.nodes = dict(items)
        new_names = {nn.name for nn in new_nodes}
        for k, ref in enumerate(outputs):
            self.rewire(TensorRef(name, k), ref, exclude=new_names)
        self.sort()

    def remove_node(self, name: str, bypass_input: int = 0) -> None:
        """Drop a single-output node; its readers read its ``bypass_input``-th input instead."""
        node = self.nodes[name]
        if node.is_input:
            raise ValueError("Input nodes cannot be removed.")
        src = node.inputs[bypass_input]
        del self.nodes[name]
        self.rewire(TensorRef(name, 0), src)

    def insert_after(self, ref: TensorRef | str, node: Node) -> Node:
        """Insert a single-input node on tensor ``ref``: all its readers now read ``node``."""
        ref = TensorRef(ref) if isinstance(ref, str) else ref
        self.rewire(ref, TensorRef(node.name, 0))
        node.inputs = [TensorRef(ref.node, ref.index)]
        self.add_node(node, after=ref.node)
        self.sort()
        return node

    def __repr__(self) -> str:
        return f"<ModelGraph {self.name}: {len(self.nodes)} nodes, inputs={self.inputs}, outputs={self.outputs}>"


def _accepted_kwargs(node: Node, kwargs: dict) -> dict:
    """The subset of ``kwargs`` that ``node``'s layer class accepts in call()."""
    call = getattr(node.layer, "call", None)
    if call is None:
        return {}
    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return copy.deepcopy(kwargs)
    return {k: copy.deepcopy(v) for k, v in kwargs.items() if k in params}


# ---------------------------------------------------------------------- reading
def _readable(model: Any) -> bool:
    """A sub-model whose graph can be inlined; a subclassed one (its own call()) stays one opaque node."""
    if isinstance(model, keras.Sequential):
        return True
    return isinstance(model, _Functional) and type(model).call is _Functional.call


def _graph_model(model: Any, where: str):
    """The Functional graph behind a Functional/Sequential model, or a clear error."""
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise UnsupportedModelError(
                f"Sequential model '{model.name}' ({where}) has not been built with a known "
                "input shape, so its graph cannot be read. Build it first, e.g. start it "
                "with keras.Input(shape=...) or call model.build((None, ...))."
            )
        return fn
    if isinstance(model, _Functional):
        if type(model).call is not _Functional.call:
            raise UnsupportedModelError(
                f"Model '{model.name}' ({where}) is a {type(model).__name__} that overrides "
                f"call(); its computation is not visible as a graph. {_SUPPORTED} "
                "Rewrite it as a functional model (keras.Model(inputs, outputs))."
            )
        return model
    if isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"Model '{model.name}' ({where}) is a subclassed keras.Model "
            f"({type(model).__name__}); its graph lives in Python code and cannot be read. "
            f"{_SUPPORTED} Rewrite it as a functional model: x = keras.Input(...); "
            "y = layer(x) ...; keras.Model(x, y)."
        )
    raise UnsupportedModelError(
        f"Expected a keras.Model, got {type(model).__name__} ({where}). {_SUPPORTED}"
    )


class _Reader:
    """Walks a model's Keras nodes and fills a ModelGraph."""

    def __init__(self, g: ModelGraph):
        self.g = g
        self.layer_names: dict[int, str] = {}  # id(layer) -> unique name in graph
        self.shared: dict[int, tuple] = {}  # id(layer) -> (config, weights, weight_names)
        self.calls: dict[str, list[str]] = {}  # layer name -> temp node keys
        self.taken: set[str] = set()
        self.counter = 0

    def _layer_name(self, layer, scope: _Scope, sub_name: str) -> str:
        key = id(layer)
        if key in self.layer_names:
            return self.layer_names[key]
        name = layer.name
        if name in self.taken and sub_name:
            name = f"{sub_name}_{layer.name}"
        base, i = name, 1
        while name in self.taken:
            name = f"{base}_{i}"
            i += 1
        self.taken.add(name)
        self.layer_names[key] = name
        self.g.layer_paths[scope.path + layer.name] = name
        return name

    def add_input(self, op, knode, scope: _Scope) -> None:
        name = self._layer_name(op, scope, "")
        t = knode.outputs[0]
        cfg = copy.deepcopy(op.get_config())
        node = Node(
            name=name, layer_name=name, class_name="InputLayer", config=cfg, weights=[],
            inputs=[], output_shapes=[tuple(t.shape)], input_shapes=[], layer=op,
            call_args=(), path=scope.path + op.name, output_dtypes=[str(t.dtype)],
        )
        self.g.nodes[name] = node
        self.calls.setdefault(name, []).append(name)
        scope.env[id(t)] = TensorRef(name, 0)

    def inline(self, fn, scope: _Scope, owner) -> None:
        """Add every call inside Functional graph ``fn`` (whose inputs are in scope.env)."""
        for knode in _topo_knodes(fn):
            op = knode.operation
            if knode.is_input:
                # An input of fn that is not mapped: unused input of a sub-model.
                continue
            if isinstance(op, keras.Model) and _readable(op):
                self._inline_submodel(op, knode, scope)
            else:
                self._add_call(op, knode, scope, sub_name=scope.path.rstrip("/").split("/")[-1])

    def _inline_submodel(self, sub, knode, scope: _Scope) -> None:
        inner = _graph_model(sub, where=f"used as a layer in '{self.g.name}'")
        args, kwargs = knode.arguments.args, knode.arguments.kwargs
        given = args[0] if args else kwargs.get("inputs")
        flat_in = [t for t in keras.tree.flatten(given) if isinstance(t, keras.KerasTensor)]
        if len(flat_in) != len(inner.inputs):
            raise UnsupportedModelError(
                f"Sub-model '{sub.name}' was called with {len(flat_in)} tensors but has "
                f"{len(inner.inputs)} inputs; cannot inline it. {_SUPPORTED}"
            )
        training = kwargs.get("training", None)
        if not isinstance(training, bool):
            training = scope.training
        sub_scope = _Scope(env={}, path=f"{scope.path}{sub.name}/", training=training)
        for t_in, t_out in zip(inner.inputs, flat_in):
            sub_scope.env[id(t_in)] = scope.env[id(t_out)]
        self.inline(inner, sub_scope, sub)
        for t_sub, t_outer in zip(inner.outputs, knode.outputs):
            scope.env[id(t_outer)] = sub_scope.env[id(t_sub)]

    def _add_call(self, op, knode, scope: _Scope, sub_name: str) -> None:
        if isinstance(op, keras.layers.Layer):
            _check_rebuildable(op)
        lname = self._layer_name(op, scope, sub_name)
        flat: list[TensorRef] = []
        in_shapes: list[tuple] = []

        def to_slot(x):
            if isinstance(x, keras.KerasTensor):
                ref = scope.env.get(id(x))
                if ref is None:
                    raise UnsupportedModelError(
                        f"Layer '{op.name}' reads a tensor that is not produced inside the "
                        f"model graph. {_SUPPORTED}"
                    )
                flat.append(ref)
                in_shapes.append(tuple(x.shape))
                return Slot(len(flat) - 1)
            return x

        args = _map_leaves(tuple(knode.arguments.args), to_slot)
        kwargs = _map_leaves(dict(knode.arguments.kwargs), to_slot)
        if (
            scope.training is not None
            and getattr(op, "_call_has_training_arg", False)
            and not isinstance(kwargs.get("training"), bool)
        ):
            kwargs["training"] = scope.training
        if id(op) not in self.shared:
            self.shared[id(op)] = _layer_state(op, lname)
        cfg, weights, wnames = self.shared[id(op)]
        self.counter += 1
        key = f"\x00{self.counter}"
        node = Node(
            name=key, layer_name=lname, class_name=type(op).__name__, config=cfg,
            weights=weights, inputs=flat, output_shapes=[tuple(t.shape) for t in knode.outputs],
            input_shapes=in_shapes, layer=op, call_args=args, call_kwargs=kwargs,
            weight_names=wnames, path=scope.path + op.name,
            output_dtypes=[str(t.dtype) for t in knode.outputs],
        )
        self.g.nodes[key] = node
        self.calls.setdefault(lname, []).append(key)
        for i, t in enumerate(knode.outputs):
            scope.env[id(t)] = TensorRef(key, i)

    def finish(self) -> None:
        """Give nodes their final names (layer name, or layer@i for shared layers)."""
        rename: dict[str, str] = {}
        for lname, keys in self.calls.items():
            if len(keys) == 1:
                rename[keys[0]] = lname
            else:
                for i, k in enumerate(keys):
                    rename[k] = f"{lname}@{i}"
        g = self.g
        new_nodes = {}
        for k, n in g.nodes.items():
            n.name = rename.get(k, k)
            n.inputs = [TensorRef(rename.get(r.node, r.node), r.index) for r in n.inputs]
            new_nodes[n.name] = n
        g.nodes = new_nodes
        g.outputs = [TensorRef(rename.get(r.node, r.node), r.index) for r in g.outputs]
        g.inputs = [rename.get(n, n) for n in g.inputs]


def _layer_state(op, lname: str) -> tuple[dict, list, list]:
    if isinstance(op, keras.layers.Layer):
        cfg = copy.deepcopy(op.get_config())
        cfg["name"] = lname
        weights = [np.array(w, copy=True) for w in op.get_weights()]
        wnames = [_weight_name(v.path, op.name) for v in op.weights]
    else:  # a bare Keras op (keras.ops.* on symbolic tensors): stateless
        try:
            cfg = copy.deepcopy(op.get_config())
        except Exception:  # noqa: BLE001 - config is informational for ops
            cfg = {}
        cfg["name"] = lname
        weights, wnames = [], []
    return cfg, weights, wnames


def _weight_name(path: str, layer_name: str) -> str:
    """A weight's path inside its layer, e.g. "kernel" or "query/kernel" (MultiHeadAttention)."""
    parts = path.split("/")
    if layer_name in parts:
        parts = parts[len(parts) - 1 - parts[::-1].index(layer_name) + 1:]
    else:
        parts = parts[-1:]
    return "/".join(parts) or path


def _check_rebuildable(layer) -> None:
    """Fail early (naming the layer) when a custom layer cannot be recreated from its config."""
    if isinstance(layer, keras.layers.Lambda):
        return
    module = type(layer).__module__ or ""
    if module.startswith("keras."):
        return
    try:
        cfg = layer.get_config()
        type(layer).from_config(copy.deepcopy(cfg))
    except Exception as e:  # noqa: BLE001
        raise UnsupportedModelError(
            f"Custom layer '{layer.name}' ({type(layer).__name__}) cannot be recreated from "
            f"its config ({type(e).__name__}: {e}). Implement get_config() returning every "
            "constructor argument (and from_config() if the constructor needs objects), "
            "and register it with @keras.saving.register_keras_serializable()."
        ) from e


def _topo_knodes(fn) -> list:
    """Keras nodes of Functional ``fn`` in topological order (iterative DFS from outputs)."""
    stop = {id(t) for t in fn.inputs}
    order, done, seen = [], set(), set()
    for out in fn.outputs:
        op, idx, _ = out._keras_history
        stack = [(op._inbound_nodes[idx], False)]
        while stack:
            kn, expanded = stack.pop()
            if id(kn) in done:
                continue
            if expanded:
                done.add(id(kn))
                order.append(kn)
                continue
            if id(kn) in seen:
                continue  # already on the stack, waiting to be expanded
            seen.add(id(kn))
            stack.append((kn, True))
            parents = []
            for t in kn.input_tensors:
                if id(t) in stop:
                    continue
                pop, pidx, _ = t._keras_history
                if pop is None:
                    continue
                parents.append(pop._inbound_nodes[pidx])
            for p in reversed(parents):
                if id(p) not in done:
                    stack.append((p, False))
    return order


# -------------------------------------------------------------------- rebuilding
def _make_input(node: Node):
    cfg = node.config
    kw = {k: cfg[k] for k in ("batch_shape", "dtype", "sparse", "ragged", "optional") if k in cfg}
    return keras.Input(name=node.name, **kw)


def _make_layer(node: Node):
    cfg = copy.deepcopy(node.config)
    cfg.pop("build_config", None)
    cfg["name"] = node.layer_name
    src = node.layer
    if src is not None and not isinstance(src, keras.layers.Layer) and isinstance(src, _Operation):
        op = copy.copy(src)  # stateless Keras op: a fresh copy with no graph history
        op._inbound_nodes, op._outbound_nodes = [], []
        return op
    if isinstance(src, keras.layers.Lambda):
        cfg.pop("function", None)
        return keras.layers.Lambda(
            src.function,
            output_shape=src._output_shape,
            mask=src.mask,
            arguments=copy.copy(src.arguments),
            name=node.layer_name,
            dtype=cfg.get("dtype"),
        )
    cls = type(src) if src is not None else _class_by_name(node.class_name)
    try:
        return cls.from_config(cfg)
    except Exception as e:  # noqa: BLE001
        raise UnsupportedModelError(
            f"Layer '{node.layer_name}' ({node.class_name}) cannot be recreated from its "
            f"config ({type(e).__name__}: {e}). Implement get_config()/from_config() for it."
        ) from e


def _class_by_name(class_name: str):
    cls = getattr(keras.layers, class_name, None) or keras.saving.get_registered_object(class_name)
    if cls is None:
        raise UnsupportedModelError(
            f"Unknown layer class '{class_name}': set Node.layer to a template instance."
        )
    return cls


# -------------------------------------------------------------------- structures
def _map_leaves(struct, fn):
    """Map over lists/tuples/dicts; KerasTensors and other objects are leaves."""
    if isinstance(struct, keras.KerasTensor):
        return fn(struct)
    if isinstance(struct, list):
        return [_map_leaves(x, fn) for x in struct]
    if isinstance(struct, tuple) and not hasattr(struct, "_fields"):
        return tuple(_map_leaves(x, fn) for x in struct)
    if isinstance(struct, dict):
        return {k: _map_leaves(v, fn) for k, v in struct.items()}
    return fn(struct)


def _map_slots(struct, fn):
    """Replace every `Slot` in a recorded structure with ``fn(slot)``."""
    if isinstance(struct, Slot):
        return fn(struct)
    if isinstance(struct, list):
        return [_map_slots(x, fn) for x in struct]
    if isinstance(struct, tuple) and not hasattr(struct, "_fields"):
        return tuple(_map_slots(x, fn) for x in struct)
    if isinstance(struct, dict):
        return {k: _map_slots(v, fn) for k, v in struct.items()}
    return struct
