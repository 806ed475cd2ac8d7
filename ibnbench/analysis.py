"""Feature divergence between two domains, layer by layer (IBN-Net paper, Sec. 4.3, Figs. 2 and 5).

For each layer and channel, F is the channel's spatial mean per image. A Gaussian is fitted to F over
domain A and over domain B, and the layer's divergence is the mean over channels of the symmetric KL
divergence ``KL(A||B) + KL(B||A)`` with the correct Gaussian KL

    KL(A||B) = log(s_B / s_A) + (s_A^2 + (mu_A - mu_B)^2) / (2 s_B^2) - 1/2.

The paper's Eq. 2 prints ``mu_B^2`` where ``(mu_A - mu_B)^2`` belongs and inverts the log ratio; both are
corrected here (identical domains must give 0, and the KL must be non-negative).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

EPS = 1e-8


def gaussian_kl(mu_a: torch.Tensor, sd_a: torch.Tensor, mu_b: torch.Tensor, sd_b: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_a, sd_a^2) || N(mu_b, sd_b^2)), elementwise."""
    sd_a, sd_b = sd_a.clamp_min(EPS), sd_b.clamp_min(EPS)
    return torch.log(sd_b / sd_a) + (sd_a ** 2 + (mu_a - mu_b) ** 2) / (2 * sd_b ** 2) - 0.5


def symmetric_kl(mu_a: torch.Tensor, sd_a: torch.Tensor, mu_b: torch.Tensor, sd_b: torch.Tensor) -> torch.Tensor:
    """KL(A||B) + KL(B||A), elementwise."""
    return gaussian_kl(mu_a, sd_a, mu_b, sd_b) + gaussian_kl(mu_b, sd_b, mu_a, sd_a)


def default_layers(model: nn.Module) -> list[str]:
    """Main-path ReLU outputs: the stem's and every residual block's (17 for a ResNet-50).

    ResNet-style models (``relu`` + ``layer1..4``) give ``relu`` and ``layerK.J``; DenseNets their
    dense blocks and transitions; anything else its top-level children.
    """
    names = dict(model.named_modules())
    if all(f"layer{k}" in names for k in range(1, 5)):
        stem = ["relu"] if "relu" in names else []
        return stem + [f"layer{k}.{j}" for k in range(1, 5) for j in range(len(names[f"layer{k}"]))]
    if "features" in names:
        return [f"features.{n}" for n, _ in names["features"].named_children()
                if n.startswith(("denseblock", "transition", "relu", "pool0"))]
    return [n for n, _ in model.named_children()]


class ChannelMeanStats:
    """Running mean and variance (over images) of every channel's spatial mean, per layer."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: dict[str, torch.Tensor] = {}
        self.sum_sq: dict[str, torch.Tensor] = {}

    def add(self, layer: str, features: torch.Tensor) -> None:
        f = features.detach().double().mean(dim=(2, 3)) if features.dim() == 4 else features.detach().double()
        if layer not in self.sum:
            self.sum[layer] = torch.zeros(f.shape[1], dtype=torch.float64, device=f.device)
            self.sum_sq[layer] = torch.zeros_like(self.sum[layer])
        self.sum[layer] += f.sum(0)
        self.sum_sq[layer] += (f ** 2).sum(0)

    def gaussian(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.sum[layer] / self.count
        var = (self.sum_sq[layer] / self.count - mean ** 2).clamp_min(0)
        return mean, var.sqrt()


@torch.no_grad()
def collect(model: nn.Module, batches: Iterable[torch.Tensor], layers: Sequence[str]) -> ChannelMeanStats:
    """Run ``model`` over ``batches`` (already normalised model inputs) and gather per-layer statistics."""
    stats = ChannelMeanStats()
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        raise ValueError(f"--layers: {', '.join(unknown)} not in the model (e.g. {', '.join(list(modules)[1:6])})")
    seen: set[str] = set()

    def hook(name: str):
        def record(_module, _inputs, output):
            if name not in seen:  # a module reused on the path (e.g. a shared ReLU) counts once per forward
                seen.add(name)
                stats.add(name, output)
        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in layers]
    try:
        for x in batches:
            seen.clear()
            model(x)
            stats.count += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    if stats.count < 2:
        raise ValueError("feature divergence needs at least 2 images per domain")
    return stats


def layer_divergence(a: ChannelMeanStats, b: ChannelMeanStats, layers: Sequence[str]) -> list[dict]:
    """``[{"name", "divergence"}]``: the mean over channels of the symmetric KL, per layer."""
    out = []
    for name in layers:
        mu_a, sd_a = a.gaussian(name)
        mu_b, sd_b = b.gaussian(name)
        out.append({"name": name, "divergence": float(symmetric_kl(mu_a, sd_a, mu_b, sd_b).mean())})
    return out


def plot_divergence(results: Sequence[dict], path: str | Path) -> Path:
    """Bar chart in the style of the paper's Fig. 5: one group per layer, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [entry["name"] for entry in results[0]["layers"]]
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(layers) * len(results) + 2), 3.8))
    for i, result in enumerate(results):
        values = [entry["divergence"] for entry in result["layers"]]
        ax.bar([k + i * width for k in range(len(layers))], values, width, label=result["model"])
    ax.set_xticks([k + width * (len(results) - 1) / 2 for k in range(len(layers))])
    ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("feature divergence (sym. KL)")
    ax.set_title(f"{results[0]['domain_a']} vs {results[0]['domain_b']}")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _domain_batches(model: nn.Module, dataset, indices: Sequence[int], condition, device: torch.device,
                    batch_size: int) -> Iterable[torch.Tensor]:
    """Normalised model inputs of ``dataset[indices]``, optionally under ``condition``."""
    from . import data as data_mod

    prep = model.ibnbench_info.preprocessing
    loader = data_mod.make_loader(dataset, [prep], batch_size=batch_size, workers=0, indices=list(indices))
    key = data_mod.geometry_key(prep)
    for batch in loader:
        x = batch["crops"][key].to(device).float()
        if condition is not None:
            x = condition(x)
        yield prep.normalize(x)


def divergence(model: str, data: str | Path, data_b: str | Path | None = None, condition: str | None = None,
               suite: str = "table1", split_classes: bool = False, layers: str | Sequence[str] = "auto",
               limit: int | None = None, device: str | None = None, weights: str | None = "official",
               batch_size: int = 32, output: str | Path | None = None, style_weights: dict | None = None) -> dict:
    """``ibnbench divergence`` as a function: per-layer feature divergence between two domains.

    Domain B is a second folder (``data_b``), ``data`` under a suite ``condition``, or, with
    ``split_classes``, the images of classes 500..999 against those of classes 0..499 (content shift).
    """
    from . import data as data_mod
    from .distributed import resolve_device
    from .models import create_model
    from .suites import load_suite

    if sum([data_b is not None, condition is not None, split_classes]) != 1:
        raise ValueError("give exactly one of --data-b, --condition or --split-classes")
    dev = resolve_device(device)
    net = create_model(model, weights=weights).to(dev)
    names = default_layers(net) if layers == "auto" else list(layers)
    set_a = data_mod.open_dataset(data, limit=limit)
    all_a = range(len(set_a))
    if split_classes:
        a_idx = [i for i in all_a if set_a.labels[i] < 500]
        b_idx = [i for i in all_a if set_a.labels[i] >= 500]
        set_b, cond, domain_a, domain_b = set_a, None, "classes 0-499", "classes 500-999"
    elif condition is not None:
        a_idx, b_idx, set_b = list(all_a), list(all_a), set_a
        cond = load_suite(suite, style_weights=style_weights)[condition]
        if cond.requires:
            raise ValueError(f"condition {condition}: missing {', '.join(cond.requires)}")
        domain_a, domain_b = "origin", cond.label
    else:
        set_b = data_mod.open_dataset(data_b, limit=limit)
        a_idx, b_idx, cond = list(all_a), list(range(len(set_b))), None
        domain_a, domain_b = str(data), str(data_b)
    stats_a = collect(net, _domain_batches(net, set_a, a_idx, None, dev, batch_size), names)
    stats_b = collect(net, _domain_batches(net, set_b, b_idx, cond, dev, batch_size), names)
    result = {"model": model, "weights": net.ibnbench_weights.get("source"), "domain_a": domain_a,
              "domain_b": domain_b, "n_a": stats_a.count, "n_b": stats_b.count,
              "layers": layer_divergence(stats_a, stats_b, names)}
    if output:
        from .results import write_json_atomic

        write_json_atomic(output, result)
    return result
