"""Reading and rebuilding functional Keras graphs, shared by the model transforms.

`quantize_aware`, `factorize` and `shrink` all return a new model made by walking the input
model's functional graph once, in order, and deciding per node what to put in its place.
Nested functional models (a `keras.applications` backbone inside a classifier) are inlined.

This module is where tfcompress touches Keras' private API; `tests/test_graph_keras.py` pins
what it relies on.
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


def output_names(model: Any) -> list[str]:
    """The name of the layer or op that produces each output of a functional model."""
    graph = functional(model)
    producer = {id(t): getattr(node.operation, "name", "") for node in nodes(graph)
                for t in node.outputs}
    return [producer.get(id(t), "") for t in graph.outputs]


def matches(layer: Any, specs: Iterable[Any]) -> bool:
    """True when `layer` matches a class, an `fnmatch` name pattern or a predicate in `specs`."""
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
        new.set_weights(layer.get_weights())
    return new


class Graph:
    """Consumers of every tensor across a functional model and the models nested in it."""

    def __init__(self, model: keras.Model):
        self.consumers: dict[int, list[Any]] = {}
        self.outputs: set[int] = set()
        self._index(model, top=True)

    def _index(self, model: keras.Model, top: bool) -> None:
        for node in nodes(model):
            for t in node.input_tensors:
                self.consumers.setdefault(id(t), []).append(node)
            if is_functional(node.operation):
                self._index(node.operation, top=False)
                # The nested model's outputs leave through its node: keep them unfused.
                self.outputs.update(id(t) for t in functional(node.operation).outputs)
        if top:
            self.outputs.update(id(t) for t in model.outputs)

    def single_consumer(self, tensor: Any) -> Any | None:
        users = self.consumers.get(id(tensor), [])
        if len(users) == 1 and id(tensor) not in self.outputs:
            return users[0]
        return None


Visit = Callable[[Any, tuple, dict], Any]


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
    graph = functional(model)
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=getattr(t, "name", None))
              for t in graph.inputs]
    tensors: dict[int, Any] = {}
    copies: dict[int, Any] = {}  # one copy per layer, so a shared layer stays shared

    def run(sub: Any, sub_inputs: list[Any]) -> list[Any]:
        sub_graph = functional(sub)
        for ref, new in zip(sub_graph.inputs, sub_inputs, strict=True):
            tensors[id(ref)] = new
        for node in nodes(sub_graph):
            if node.is_input:
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            if is_functional(node.operation):
                inner = keras.tree.flatten(args[0]) if len(args) == 1 else list(args)
                outs = run(node.operation, inner)
                outputs = outs[0] if len(outs) == 1 else outs
            else:
                outputs = visit(node, args, kwargs)
                if outputs is None:
                    op = node.operation
                    if id(op) not in copies:
                        copies[id(op)] = clone_layer(op)
                    outputs = copies[id(op)](*args, **kwargs)
            for ref, new in zip(node.outputs, keras.tree.flatten(outputs), strict=True):
                tensors[id(ref)] = new
        return [tensors[id(t)] for t in sub_graph.outputs]

    outputs = run(graph, inputs)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0],
                       outputs if len(outputs) > 1 else outputs[0], name=name)


def flat(model: keras.Model) -> keras.Model:
    """`model` itself, or, when it nests functional models (a `keras.applications` backbone),
    a copy with every nested model inlined: same layer names, weights and outputs, so that
    every layer's output is a tensor of one graph."""
    if not any(is_functional(node.operation) for node in nodes(model)):
        return model
    return rebuild(model, lambda node, args, kwargs: None, model.name)

