"""Capture a model into a torch.fx graph with state-space layers and scan ops kept as leaves.

Plain ``symbolic_trace`` cannot follow a scan; ours is a custom op, so it stays one
``call_function`` node, and every module that has a registered adapter stays one ``call_module``
node. A model that still cannot be traced is not an error: matching falls back to the module
tree, and the capture says why so the report can show it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import networkx as nx
from torch import fx, nn

from ..adapters import adapter_for
from ..ops import SCAN_OPS
from .precision import describe_exception


def is_scan_node(node: fx.Node) -> bool:
    """True for a call of one of our scan custom ops (any overload)."""
    if node.op != "call_function":
        return False
    target = node.target
    packet = getattr(target, "overloadpacket", target)
    return getattr(packet, "_qualified_op_name", "") in {f"ssmcompile::{n}" for n in SCAN_OPS}


class SSMTracer(fx.Tracer):
    """Keeps modules with a registered adapter (and torch's own layers) as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if adapter_for(m) is not None:
            return True
        return super().is_leaf_module(m, module_qualified_name)


@dataclass(frozen=True)
class Capture:
    """The result of capturing a model.

    ``graph_module`` is ``None`` when tracing failed; ``note`` then says why. ``graph`` is the
    data-flow graph of the fx nodes (networkx), used for block ordering and dependencies.
    """

    graph_module: fx.GraphModule | None
    note: str
    graph: nx.DiGraph

    @property
    def traced(self) -> bool:
        return self.graph_module is not None


def to_networkx(graph: fx.Graph) -> nx.DiGraph:
    """The fx graph as a networkx DiGraph keyed by node name (edges follow data flow)."""
    g = nx.DiGraph()
    for node in graph.nodes:
        g.add_node(node.name, op=node.op, target=str(node.target))
        for inp in node.all_input_nodes:
            g.add_edge(inp.name, node.name)
    return g


def capture(model: nn.Module) -> Capture:
    """Trace a copy of ``model`` with :class:`SSMTracer`; never raises for an untraceable model.

    A copy, because tracing runs ``forward`` on proxies: a layer that assigns ``self.x = ...``
    there would keep a ``Proxy`` and produce garbage afterwards. The graph module's submodules
    are the copy's; read the live modules from the model by the nodes' qualified names.
    """
    try:
        tracer = SSMTracer()
        graph = tracer.trace(copy.deepcopy(model))
        gm = fx.GraphModule(tracer.root, graph, model.__class__.__name__)
    except Exception as err:  # noqa: BLE001 - any tracing failure means "fall back", by design
        return Capture(None, f"torch.fx could not trace the model ({describe_exception(err)}); "
                             "matched modules "
                             "by type instead", nx.DiGraph())
    return Capture(gm, "traced with torch.fx", to_networkx(gm.graph))


def block_dependencies(cap: Capture, block_nodes: dict[str, str]) -> nx.DiGraph:
    """Which block feeds which: an edge a → b when data flows from a to b without passing
    through a third block. ``block_nodes`` maps block name → fx node name."""
    deps = nx.DiGraph()
    deps.add_nodes_from(block_nodes)
    if not cap.traced:
        return deps
    node_to_block = {v: k for k, v in block_nodes.items()}
    for name, node in block_nodes.items():
        g = cap.graph.copy()
        others = [n for n in node_to_block if n != node]
        g.remove_edges_from([e for o in others for e in list(g.out_edges(o))])
        for reached in nx.descendants(g, node) & node_to_block.keys():
            deps.add_edge(name, node_to_block[reached])
    return deps


def block_order(deps: nx.DiGraph, fallback: list[str]) -> list[str]:
    """Blocks in data-flow order (ties broken by module order); cycles cannot occur in an fx
    graph, but a dependency graph built otherwise is checked."""
    deps = deps.copy()
    deps.add_nodes_from(fallback)
    if not nx.is_directed_acyclic_graph(deps):
        return fallback
    rank = {n: i for i, n in enumerate(fallback)}
    return list(nx.lexicographical_topological_sort(deps, key=lambda n: rank.get(n, 0)))


__all__ = ["Capture", "SSMTracer", "capture", "is_scan_node", "block_dependencies", "block_order",
           "to_networkx"]

