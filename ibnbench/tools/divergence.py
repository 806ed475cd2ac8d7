"""Feature divergence between two domains, layer by layer (IBN-Net paper, Sec. 4.3, Figs. 2 and 5).

For each layer and channel, F is the channel's spatial mean per image. A Gaussian is fitted to F over
domain A and over domain B, and the layer's divergence is the mean over channels of the symmetric KL
divergence ``KL(A||B) + KL(B||A)`` with the correct Gaussian KL

    KL(A||B) = log(s_B / s_A) + (s_A^2 + (mu_A - mu_B)^2) / (2 s_B^2) - 1/2.

The paper's Eq. 2 prints ``mu_B^2`` where ``(mu_A - mu_B)^2`` belongs and inverts the log ratio; both are
corrected here (identical domains must give 0, and the KL must be non-negative).

Degenerate channels. A standard deviation at or below ``REL_FLOOR`` (1e-5) times the layer's feature scale
(the root mean square of F over both domains and all channels) is float32 rounding noise, not variation:
such a channel is *constant* in that domain. A channel constant in both domains with the same mean (a dead
ReLU, or an instance-norm output whose spatial mean is its bias) has divergence 0 and counts in the mean.
A channel constant in one domain only, or constant in both with different means, has an infinite Gaussian
KL: it is *excluded* from the layer's mean and counted in ``excluded`` (flooring s instead gives terms
``(s^2 + (mu_A - mu_B)^2) / (2 floor^2)`` that are set by the arbitrary floor and dominate the mean).
A layer whose channels are all excluded has divergence ``None``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from ibnbench.errors import UsageError

REL_FLOOR = 1e-5
ABS_FLOOR = 1e-12  # for a layer that is zero everywhere


def gaussian_kl(mu_a: torch.Tensor, sd_a: torch.Tensor, mu_b: torch.Tensor, sd_b: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_a, sd_a^2) || N(mu_b, sd_b^2)), elementwise (standard deviations must be positive)."""
    return torch.log(sd_b / sd_a) + (sd_a ** 2 + (mu_a - mu_b) ** 2) / (2 * sd_b ** 2) - 0.5


def symmetric_kl(mu_a: torch.Tensor, sd_a: torch.Tensor, mu_b: torch.Tensor, sd_b: torch.Tensor) -> torch.Tensor:
    """KL(A||B) + KL(B||A), elementwise."""
    return gaussian_kl(mu_a, sd_a, mu_b, sd_b) + gaussian_kl(mu_b, sd_b, mu_a, sd_a)


def default_layers(model: nn.Module) -> list[str]:
    """Main-path block outputs in depth order (17 ReLU outputs for a ResNet-50).

    ResNet-style models (``layer1..4``) give the stem's ReLU (``relu``, or timm's ``act1``) and every
    residual block ``layerK.J``; DenseNets their stem, dense blocks and transitions; any other model the
    items of its top-level block lists (``nn.ModuleList`` / ``nn.Sequential``), or else its top-level
    children that hold parameters.
    """
    names = dict(model.named_modules())
    if all(f"layer{k}" in names for k in range(1, 5)):
        stem = [n for n in ("relu", "act1") if n in names][:1]
        return stem + [f"layer{k}.{j}" for k in range(1, 5) for j in range(len(names[f"layer{k}"]))]
    if "features" in names and any(n.startswith("features.denseblock") for n in names):
        return [f"features.{n}" for n, _ in names["features"].named_children()
                if n.startswith(("denseblock", "transition", "relu", "pool0"))]
    blocks = [f"{n}.{i}" for n, child in model.named_children() if isinstance(child, (nn.ModuleList, nn.Sequential))
              for i, _ in child.named_children()]
    return blocks or [n for n, child in model.named_children() if any(True for _ in child.parameters())]


class ChannelMeanStats:
    """Per layer: the mean and standard deviation over images of every channel's spatial mean.

    Sums are kept in float64 about each channel's first value, so a channel that is constant up to
    float32 rounding gives a standard deviation at that rounding level rather than cancellation noise.
    """

    def __init__(self) -> None:
        self.count = 0
        self.origin: dict[str, torch.Tensor] = {}
        self.sum: dict[str, torch.Tensor] = {}
        self.sum_sq: dict[str, torch.Tensor] = {}

    def add(self, layer: str, features: torch.Tensor) -> None:
        f = features.detach().float()
        f = (f.mean(dim=(2, 3)) if f.dim() == 4 else f).double()
        if layer not in self.sum:
            self.origin[layer] = f[0].clone()
            self.sum[layer] = torch.zeros_like(f[0])
            self.sum_sq[layer] = torch.zeros_like(f[0])
        f = f - self.origin[layer]
        self.sum[layer] += f.sum(0)
        self.sum_sq[layer] += (f ** 2).sum(0)

    def gaussian(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, s)`` of every channel of ``layer``."""
        mean = self.sum[layer] / self.count
        var = (self.sum_sq[layer] / self.count - mean ** 2).clamp_min(0)
        return self.origin[layer] + mean, var.sqrt()


@torch.no_grad()
def collect(model: nn.Module, batches: Iterable[torch.Tensor], layers: Sequence[str]) -> ChannelMeanStats:
    """Run ``model`` over ``batches`` (already normalised model inputs) and gather per-layer statistics."""
    stats = ChannelMeanStats()
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        raise UsageError(f"--layers: {', '.join(unknown)} not in the model (e.g. {', '.join(list(modules)[1:6])})")
    seen: set[str] = set()

    def hook(name: str):
        def record(_module, _inputs, output):
            if name in seen:  # a module reused on the path (e.g. a shared activation) counts once per forward
                return
            if not isinstance(output, torch.Tensor) or output.dim() not in (2, 4):
                raise UsageError(f"--layers: {name} does not output a [N, C, H, W] or [N, C] tensor")
            seen.add(name)
            stats.add(name, output)
        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in layers]
    try:
        for x in batches:
            seen.clear()
            model(x)
            silent = [n for n in layers if n not in seen]
            if silent:
                raise UsageError(f"--layers: {', '.join(silent)} never ran in the forward pass "
                                 "(a container such as a ModuleList? name its items)")
            stats.count += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    if stats.count < 2:
        raise UsageError(f"feature divergence needs at least 2 images per domain, got {stats.count}")
    return stats


def channel_divergence(mu_a: torch.Tensor, sd_a: torch.Tensor, mu_b: torch.Tensor,
                       sd_b: torch.Tensor) -> torch.Tensor:
    """Symmetric KL per channel, 0 for channels constant and equal in both domains, NaN where it is infinite
    (constant in one domain only, or constant in both with different means); see the module docstring."""
    scale = torch.cat([mu_a ** 2 + sd_a ** 2, mu_b ** 2 + sd_b ** 2]).mean().sqrt().item()
    floor = max(REL_FLOOR * scale, ABS_FLOOR)
    const_a, const_b = sd_a <= floor, sd_b <= floor
    varying = ~const_a & ~const_b
    out = torch.full_like(mu_a, math.nan)
    out[varying] = symmetric_kl(mu_a[varying], sd_a[varying], mu_b[varying], sd_b[varying])
    out[const_a & const_b & ((mu_a - mu_b).abs() <= floor)] = 0.0
    return out


def layer_divergence(a: ChannelMeanStats, b: ChannelMeanStats, layers: Sequence[str]) -> list[dict]:
    """Per layer ``{"name", "divergence", "channels", "excluded"}``: the mean symmetric KL over the channels
    where it is finite (``None`` if there are none), the number of channels and of excluded ones."""
    out = []
    for name in layers:
        per_channel = channel_divergence(*a.gaussian(name), *b.gaussian(name))
        finite = per_channel[~per_channel.isnan()]
        out.append({"name": name, "divergence": float(finite.mean()) if finite.numel() else None,
                    "channels": per_channel.numel(), "excluded": per_channel.numel() - finite.numel()})
    return out


def plot_divergence(results: Sequence[dict], path: str | Path) -> Path:
    """Bar chart in the style of the paper's Fig. 5: one group per layer, one bar per model (one result each).

    Models with different layer names are aligned by depth (layer 1, 2, ...); a layer without a finite
    divergence gets no bar.
    """
    from ibnbench.results.plots import pyplot, save_figure

    plt = pyplot()
    names = [[entry["name"] for entry in r["layers"]] for r in results]
    n_layers = max(map(len, names))
    same = all(n == names[0] for n in names)
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(min(24.0, max(7.0, 0.3 * n_layers * len(results) + 2.5)), 4.8))
    for i, result in enumerate(results):
        values = [math.nan if e["divergence"] is None else e["divergence"] for e in result["layers"]]
        weights = result.get("weights")
        label = result["model"] + (f" ({weights} weights)" if weights in ("random", None) else "")
        bars = ax.bar([k + (i - (len(results) - 1) / 2) * width for k in range(len(values))], values, width,
                      label=label)
        if n_layers * len(results) <= 60:
            ax.bar_label(bars, fmt="%.2g", rotation=90, fontsize=6, padding=2)
    ax.set_xticks(range(n_layers))
    ax.set_xticklabels(names[0] if same else [str(k + 1) for k in range(n_layers)], rotation=45, ha="right",
                       rotation_mode="anchor", fontsize=8)
    ax.set_xlim(-0.6, n_layers - 0.4)
    ax.set_xlabel("layer (module path, input side first)" if same else "layer (depth order)")
    ax.set_ylabel("feature divergence\n(mean symmetric KL over channels)")
    first = results[0]
    ax.set_title(f"Feature divergence: {first['domain_a']} vs {first['domain_b']} "
                 f"({first.get('n_a', '?')} / {first.get('n_b', '?')} images)")
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.12)
    ax.legend()
    excluded = sum(e.get("excluded", 0) for r in results for e in r["layers"])
    if excluded:
        fig.text(0.01, 0.01, f"{excluded} channel(s) with infinite KL (constant in one domain only, or at different "
                 "constants): excluded from the means",
                 fontsize=7, color="dimgray")
    return save_figure(fig, path)


def _domain_batches(model: nn.Module, dataset, indices: Sequence[int], condition, device: torch.device,
                    batch_size: int, desc: str = "divergence") -> Iterable[torch.Tensor]:
    """Normalised model inputs of ``dataset[indices]``, optionally under ``condition``, with progress."""
    from ibnbench.data.geometry import geometry_key
    from ibnbench.data.loader import make_loader
    from ibnbench.progress import Progress

    prep = model.ibnbench_info.preprocessing
    loader = make_loader(dataset, [prep], batch_size=batch_size, workers=0, indices=list(indices))
    key = geometry_key(prep)
    with Progress(len(indices), desc) as progress:
        for batch in loader:
            x = batch["crops"][key].to(device).float()
            if condition is not None:
                x = condition(x)
            yield prep.normalize(x)
            progress.update(len(batch["index"]))


def _domains(data: str | Path, data_b: str | Path | None, condition: str | None, suite: str, split_classes: bool,
             limit: int | None, style_weights: dict | None) -> tuple:
    """The two domains as ``(dataset A, indices A, name A, dataset B, indices B, name B, condition)``:
    the condition is applied to domain B's crops (None when B is a folder of its own)."""
    from ibnbench.data.discovery import open_dataset
    from ibnbench.eval.plan import load_suite, select_conditions

    if split_classes:
        dataset = open_dataset(data)
        labels = dataset.labels.tolist()
        return (dataset, [i for i, label in enumerate(labels) if label < 500][:limit], "classes 0-499",
                dataset, [i for i, label in enumerate(labels) if label >= 500][:limit], "classes 500-999", None)
    set_a = open_dataset(data, limit=limit)
    a_idx = list(range(len(set_a)))
    if condition is None:
        set_b = open_dataset(data_b, limit=limit)
        return set_a, a_idx, str(data), set_b, list(range(len(set_b))), str(data_b), None
    selected, _ = select_conditions(load_suite(suite, style_weights=style_weights), [condition],
                                    hint="or choose another --condition")
    chosen = selected[condition]
    own = chosen.source(set_a)  # a pre-stylised copy of the dataset is read as domain B
    if own is not None:
        return set_a, a_idx, "origin", own, a_idx, chosen.label, None
    return set_a, a_idx, "origin", set_a, a_idx, chosen.label, chosen


def divergence(model: str, data: str | Path, data_b: str | Path | None = None, condition: str | None = None,
               suite: str = "table1", split_classes: bool = False, layers: str | Sequence[str] = "auto",
               limit: int | None = None, device: str | None = None, weights: str | None = "official",
               batch_size: int = 32, output: str | Path | None = None, style_weights: dict | None = None) -> dict:
    """``ibnbench divergence`` as a function: per-layer feature divergence between two domains.

    Domain B is a second folder (``data_b``), ``data`` under a suite ``condition`` (appearance shift), or,
    with ``split_classes``, the images of classes 500..999 against those of classes 0..499 (content shift).
    ``limit`` keeps the first N images (sorted order) of each domain. Returns
    ``{"model", "weights", "domain_a", "domain_b", "n_a", "n_b", "layers": [{"name", "divergence", ...}]}``.
    """
    from ibnbench.eval.distributed import resolve_device
    from ibnbench.io import ensure_writable
    from ibnbench.zoo import create_model, model_info

    if sum([data_b is not None, condition is not None, split_classes]) != 1:
        raise UsageError("give exactly one of --data-b, --condition or --split-classes")
    model_info(model)  # cheap checks (model name, device) before the data is listed
    dev = resolve_device(device)
    if limit is not None and limit < 2:
        raise UsageError(f"--limit: feature divergence needs at least 2 images per domain, got {limit}")
    set_a, a_idx, domain_a, set_b, b_idx, domain_b, cond = _domains(data, data_b, condition, suite, split_classes,
                                                                    limit, style_weights)
    for indices, domain in ((a_idx, domain_a), (b_idx, domain_b)):
        if len(indices) < 2:
            raise UsageError(f"feature divergence needs at least 2 images per domain; {domain} has {len(indices)}")
    if output:
        ensure_writable(output, "result")
    net = create_model(model, weights=weights).to(dev)
    names = default_layers(net) if layers == "auto" else list(layers)
    if not names:
        raise UsageError("--layers: no layer names given")
    stats_a = collect(net, _domain_batches(net, set_a, a_idx, None, dev, batch_size, f"{model}: {domain_a}"), names)
    stats_b = collect(net, _domain_batches(net, set_b, b_idx, cond, dev, batch_size, f"{model}: {domain_b}"), names)
    result = {"model": model, "weights": net.ibnbench_weights.source, "domain_a": domain_a,
              "domain_b": domain_b, "n_a": stats_a.count, "n_b": stats_b.count,
              "layers": layer_divergence(stats_a, stats_b, names)}
    if output:
        from ibnbench.io import write_json_atomic

        write_json_atomic(output, result)
    return result
