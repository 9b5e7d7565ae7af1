"""Reading and rebuilding functional Keras graphs: the one place that walks a model.

`quantize_aware`, `strip_fake_quant`, `factorize`, `shrink` and `make_student`'s pooling
folding all return a new model made by `rebuild`: it walks the input model's graph once, in
order, and asks a per-transform `visit` what to put in place of each node (layers and
`keras.ops` calls alike, e.g. MobileNetV3's `x + 3.0`). Nested functional models (a
`keras.applications` backbone inside a classifier) are inlined. Channel pruning, the pooling
fold and the QAT fusions read the graph through `Graph` (who produces and who reads each
tensor), and every count of layers, parameters and MACs goes through `all_layers` and
`output_shape`.

Why not `keras.models.clone_model(model, clone_function=..., call_function=...,
recursive=True)`, Keras' public rewriter? It was tried first. It does replace a layer
(`clone_function`) or a call (`call_function`) and it keeps shared layers shared, which covers
`factorize` and `shrink`. It cannot:
- tell `call_function` which node it is at, so a decision that depends on the graph (a
  BatchNormalization folded into the convolution before it, a ReLU fused into it, a pooling
  turned into that convolution's stride) has to be made beforehand per layer object, and is
  wrong for a layer that is called twice;
- drop a node's output in favour of an earlier one (the folded BatchNormalization) without
  leaving an identity op in the graph;
- inline nested models: with `recursive=True` they are cloned but stay nested, so a
  convolution at the end of a backbone cannot fuse with what follows it outside;
- rewrite a Sequential model with `call_function`.
So `rebuild` walks the graph itself, the way Keras' own `Function._run_through_graph` does
(`_nodes_by_depth`, `node.arguments.fill_in`).

This module is the only one that touches Keras' private graph API (`_nodes_by_depth`,
`_functional`, node internals, `_flatten_layers`, `_inbound_nodes`);
`tests/test_graph_keras.py` pins what it relies on.
"""

import contextlib
import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

import keras


def functional(model: Any) -> Any:
    """The functional graph behind a Functional or (built) Sequential model."""
    return getattr(model, "_functional", None) or model


def is_functional(op: Any) -> bool:
    """True for a model whose graph can be read (Functional, or a built Sequential)."""
    return isinstance(op, keras.Model) and hasattr(functional(op), "_nodes_by_depth")


def require_functional(model: Any, needed_by: str | None = None) -> None:
    """Raises a `TypeError` that says what to do when the graph of `model` cannot be read;
    `needed_by` names the operation that needs it, e.g. `"quantize_aware"`."""
    if not is_functional(model):
        who = f"{needed_by} needs the model's graph, and " if needed_by else ""
        raise TypeError(
            f"{who}{model.name!r} is a subclassed {type(model).__name__}, whose graph cannot be "
            "read. Build the same network with the functional API (keras.Input(...) -> layers "
            "-> keras.Model) or as a keras.Sequential."
        )


def nodes(model: Any) -> list[Any]:
    """The nodes of a functional model, inputs first (topological order)."""
    graph = functional(model)
    out = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        out.extend(graph._nodes_by_depth[depth])
    return out


def all_nodes(model: Any) -> list[Any]:
    """The nodes of a functional model and of the functional models nested in it, in order."""
    out = []
    for node in nodes(model):
        out.append(node)
        if is_functional(node.operation):
            out.extend(all_nodes(node.operation))
    return out


def layer_nodes(model: Any) -> list[tuple[Any, Any, list[str]]]:
    """`(operation, output, input_names)` for every layer or `keras.ops` call of a functional
    model, in order; a nested model counts as one layer. Operations called more than once are
    left out (their output is not one tensor)."""
    producer: dict[int, str] = {}
    calls: dict[int, int] = {}
    found = []
    for node in nodes(model):
        op = node.operation
        for t in node.outputs:
            producer[id(t)] = getattr(op, "name", "")
        if node.is_input:
            continue
        calls[id(op)] = calls.get(id(op), 0) + 1
        inputs = [producer[id(t)] for t in node.input_tensors if id(t) in producer]
        found.append((op, node.outputs[0] if len(node.outputs) == 1 else None, inputs))
    return [(op, out, ins) for op, out, ins in found if out is not None and calls[id(op)] == 1]


def all_layers(model: Any) -> list[Any]:
    """Every layer inside `model`, nested models and sub-layers included, each once."""
    return model._flatten_layers(include_self=False, recursive=True)


def output_shape(layer: Any) -> tuple | None:
    """The shape of a layer's (first) output where it was first called, or None if never."""
    called = getattr(layer, "_inbound_nodes", None)
    if not called:
        return None
    return tuple(called[0].outputs[0].shape)


def call_count(layer: Any) -> int:
    """How many times `layer` is called in the graphs it belongs to (2+ for a shared one)."""
    return len(getattr(layer, "_inbound_nodes", None) or [])


def name_producer(tensor: Any, name: str) -> None:
    """Renames the operation that produced a symbolic tensor (a `keras.ops` call takes no
    name, and its automatic one can clash with a layer's)."""
    history = getattr(tensor, "_keras_history", None)
    if history is not None:
        history.operation.name = name


def output_names(model: Any) -> list[str]:
    """The name of the layer or op that produces each output of a functional model."""
    graph = functional(model)
    producer = {id(t): getattr(node.operation, "name", "") for node in nodes(graph)
                for t in node.outputs}
    return [producer.get(id(t), "") for t in graph.outputs]


def matches(layer: Any, specs: Iterable[Any]) -> bool:
    """True when `layer` matches a class, an `fnmatch` name pattern or a predicate in `specs`
    (checked by `layer_specs`)."""
    for spec in specs:
        if isinstance(spec, type) and isinstance(layer, spec):
            return True
        if isinstance(spec, str) and fnmatch.fnmatchcase(getattr(layer, "name", ""), spec):
            return True
        if callable(spec) and not isinstance(spec, type) and spec(layer):
            return True
    return False


def as_specs(specs: Any) -> list | None:
    """`None`, or a list of layer specs from one spec or an iterable of them."""
    if specs is None:
        return None
    if isinstance(specs, (str, type)) or callable(specs):
        return [specs]
    return list(specs)


def layer_specs(model: Any, specs: Any, argument: str) -> list | None:
    """The one check of a "which layers" argument (`layers=`, `exclude=`, `float_layers=`):
    `None`, or a list of layer classes, `fnmatch` name patterns and predicates.

    Raises:
        TypeError: For an item of another type (e.g. a layer index).
        ValueError: For a name or pattern that matches no layer of `model` (a typo would
            otherwise select nothing, silently); the message lists the model's layers.
    """
    specs = as_specs(specs)
    if specs is None:
        return None
    for spec in specs:
        if not (isinstance(spec, (str, type)) or callable(spec)):
            raise TypeError(
                f"{argument}= takes layer classes, name patterns (str) or predicates; got "
                f"{spec!r} ({type(spec).__name__}). Name the layer instead, e.g. "
                f"{argument}=[model.layers[i].name].")
    names = [layer.name for layer in all_layers(model)]
    unknown = [s for s in specs if isinstance(s, str) and not fnmatch.filter(names, s)]
    if unknown:
        shown = ", ".join(names[:30]) + (f" ... ({len(names)} in all)" if len(names) > 30
                                         else "")
        raise ValueError(f"{argument}={unknown} matches no layer of {model.name!r}. Its "
                         f"layers: {shown}.")
    return specs


@contextlib.contextmanager
def copying_loaded_code():
    """Lets Keras rebuild Lambda layers from their config while copying a model that is
    already in this process (its code already runs here: the user loaded it, with `--unsafe`
    where it came from a file). Keras' safe mode is put back afterwards. Keras has no public
    scope for this (`keras.config.enable_unsafe_deserialization` is global and final), so this
    uses its private `SafeModeScope`."""
    from keras.src.saving.serialization_lib import SafeModeScope

    with SafeModeScope(False):
        yield


def clone_layer(layer: Any) -> Any:
    """A fresh copy of a layer with the same config and weights (the input is never shared)."""
    if not isinstance(layer, keras.layers.Layer):
        return layer  # a stateless keras.ops operation
    with copying_loaded_code():
        new = layer.__class__.from_config(layer.get_config())
    if layer.weights:
        new.build(layer.input.shape if not isinstance(layer.input, list)
                  else [t.shape for t in layer.input])
        set_weights(new, layer.get_weights())
    return new


def set_weights(target: Any, weights: list) -> None:
    """`target.set_weights(weights)` for a layer or a model, then what Keras does when it
    loads a file and `set_weights` does not: an adapted preprocessing layer (`Normalization`
    with statistics from `adapt`) recomputes the tensors it computes with from its weights
    (`finalize_state`, which Keras' `load_own_variables` calls). Without it, a copied
    `Normalization` keeps computing with the statistics it was built with."""
    target.set_weights(weights)
    layers = all_layers(target) if isinstance(target, keras.Model) else [target]
    for layer in layers:
        finalize = getattr(layer, "finalize_state", None)
        if callable(finalize):
            finalize()


class Graph:
    """Producer and consumers of every tensor across a functional model and the models nested
    in it."""

    def __init__(self, model: keras.Model):
        self.consumers: dict[int, list[Any]] = {}
        self.producers: dict[int, Any] = {}
        self.outputs: set[int] = set()
        self._index(model, top=True)

    def _index(self, model: keras.Model, top: bool) -> None:
        for node in nodes(model):
            for t in node.outputs:
                self.producers.setdefault(id(t), node)
            for t in node.input_tensors:
                self.consumers.setdefault(id(t), []).append(node)
            if is_functional(node.operation):
                self._index(node.operation, top=False)
                # The nested model's outputs leave through its node: keep them unfused.
                self.outputs.update(id(t) for t in functional(node.operation).outputs)
        if top:
            self.outputs.update(id(t) for t in model.outputs)

    def producer(self, tensor: Any) -> Any | None:
        """The node whose output `tensor` is (None for a model input)."""
        node = self.producers.get(id(tensor))
        return None if node is None or node.is_input else node

    def single_consumer(self, tensor: Any) -> Any | None:
        users = self.consumers.get(id(tensor), [])
        if len(users) == 1 and id(tensor) not in self.outputs:
            return users[0]
        return None


Visit = Callable[[Any, tuple, dict], Any]


class Rebuilder:
    """Walks a functional graph in order and builds a new one, node by node.

    `visit(node, args, kwargs)` gets each node (nested models are entered, not visited) with
    its arguments already mapped to the new graph's tensors, and returns the node's new
    outputs, or `None` for a copy of its layer (same config and weights; one copy per shared
    layer, so it stays shared). A transform that replaces several nodes with one (a folded
    BatchNormalization) calls `alias(old_tensor, new_tensor)` and `skip(node)`.
    """

    def __init__(self, visit: Visit):
        self.visit = visit
        self.tensors: dict[int, Any] = {}
        self.skipped: set[int] = set()
        self._aliased: set[int] = set()
        self._copies: dict[int, Any] = {}

    def alias(self, old: Any, new: Any) -> None:
        """Makes `new` stand for the old graph's tensor `old` from now on."""
        self.tensors[id(old)] = new
        self._aliased.add(id(old))

    def skip(self, node: Any) -> None:
        """Leaves `node` out: its outputs were aliased by an earlier node."""
        self.skipped.add(id(node))

    def copy(self, op: Any) -> Any:
        if id(op) not in self._copies:
            self._copies[id(op)] = clone_layer(op)
        return self._copies[id(op)]

    def run(self, model: Any, inputs: list[Any]) -> list[Any]:
        """The new graph's outputs of `model`, called on the new tensors `inputs`."""
        graph = functional(model)
        for ref, new in zip(graph.inputs, inputs, strict=True):
            self.tensors[id(ref)] = new
        for node in nodes(graph):
            if node.is_input or id(node) in self.skipped:
                continue
            args, kwargs = node.arguments.fill_in(self.tensors)
            if is_functional(node.operation):
                inner = keras.tree.flatten(args[0]) if len(args) == 1 else list(args)
                outs = self.run(node.operation, inner)
                outputs = outs[0] if len(outs) == 1 else outs
            else:
                outputs = self.visit(node, args, kwargs)
                if outputs is None:
                    outputs = self.copy(node.operation)(*args, **kwargs)
            for ref, new in zip(node.outputs, keras.tree.flatten(outputs), strict=True):
                if id(ref) not in self._aliased:
                    self.tensors[id(ref)] = new
        return [self.tensors[id(t)] for t in graph.outputs]


def new_inputs(model: Any) -> list[Any]:
    """Fresh `keras.Input`s like the model's (a fixed batch size, e.g. 1, is kept)."""
    return [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=getattr(t, "name", None))
            for t in functional(model).inputs]


def as_model(inputs: list[Any], outputs: list[Any], name: str) -> keras.Model:
    return keras.Model(inputs if len(inputs) > 1 else inputs[0],
                       outputs if len(outputs) > 1 else outputs[0], name=name)


def rebuild(model: keras.Model, visit: Visit, name: str) -> keras.Model:
    """A new model with the graph of `model`, each node's layer replaced by what `visit` says.

    Args:
        model: A functional or Sequential model. It is not modified.
        visit: Called as `visit(node, args, kwargs)` with the node's arguments already mapped
            to the new graph's tensors; returns the node's new outputs, or `None` to use a
            copy of the node's layer (same config and weights; one copy per shared layer).
        name: Name of the new model.

    Returns:
        A new, uncompiled functional `keras.Model`.

    Raises:
        TypeError: If `model` is subclassed (its graph cannot be read).
    """
    require_functional(model)
    inputs = new_inputs(model)
    return as_model(inputs, Rebuilder(visit).run(model, inputs), name)


def flat(model: keras.Model) -> keras.Model:
    """`model` itself, or, when it nests functional models (a `keras.applications` backbone),
    a copy with every nested model inlined: same layer names, weights and outputs, so that
    every layer's output is a tensor of one graph."""
    if not any(is_functional(node.operation) for node in nodes(model)):
        return model
    return rebuild(model, lambda node, args, kwargs: None, model.name)

