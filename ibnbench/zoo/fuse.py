"""Batch norms folded into the convolutions before them, for evaluation (``--compile``).

:func:`fold_batch_norms` traces an eval-mode model with ``torch.fx`` and, wherever a convolution's output goes
only to a batch norm with running statistics, replaces the pair by one convolution with torch's own
:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`. IBN layers and instance norms
(:mod:`ibnbench.zoo.layers`) stay opaque: their batch-norm halves normalise a slice of the convolution's output,
which no single convolution can absorb, so they are left as they are.
"""
from __future__ import annotations

import copy

from torch import fx, nn
from torch.fx.experimental.optimization import replace_node_module
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ibnbench.zoo.layers import IBN

OPAQUE = (IBN, _InstanceNorm, _ConvNd, _BatchNorm)
"""Modules traced as single calls: IBN layers and instance norms (never folded), convolutions and batch norms
(subclasses included, e.g. EfficientNet-Lite's same-padding convolution)."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, OPAQUE) or super().is_leaf_module(module, qualified_name)


def fold_batch_norms(model: nn.Module) -> fx.GraphModule:
    """An eval-mode copy of ``model`` with every convolution -> batch norm pair folded into one convolution.

    Only batch norms that read a convolution's output alone (its only user) and keep running statistics are
    folded; those inside IBN layers stay. ``model`` itself is not changed. Raises RuntimeError for a model in
    training mode (folding uses the running statistics) and torch.fx's errors for one it cannot trace.
    """
    if model.training:
        raise RuntimeError("fold_batch_norms needs a model in eval mode (it folds the running statistics)")
    model = copy.deepcopy(model)  # the graph module shares its submodules, which folding replaces
    traced = fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):
        if not _folds_into_previous(node, modules):
            continue
        conv_node = node.args[0]
        folded = fuse_conv_bn_eval(modules[conv_node.target], modules[node.target])
        replace_node_module(conv_node, modules, folded)
        node.replace_all_uses_with(conv_node)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced.eval()


def _folds_into_previous(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` calls a batch norm with running statistics whose only input is a convolution's output
    used by nothing else."""
    if node.op != "call_module" or not isinstance(modules.get(node.target), _BatchNorm) or len(node.args) != 1:
        return False
    previous = node.args[0]
    return (isinstance(previous, fx.Node) and previous.op == "call_module"
            and isinstance(modules.get(previous.target), _ConvNd) and len(previous.users) == 1
            and modules[node.target].track_running_stats and modules[node.target].running_mean is not None)

