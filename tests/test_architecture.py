"""The rooms and their one-way flow (docs/architecture.md): quantizers at the bottom, then the benchmark's
rooms, analysis, sweeps, and the command line on top. Every import, top-level or deferred inside a function,
is read from the source with ``ast``; a module may import only from its own level or below, and no two
modules may reach each other through imports (no cycles)."""
from __future__ import annotations

import dataclasses
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("quantizers", "benchmark", "analysis", "sweeps")
#: Longest matching prefix wins. Same level may import each other, but not in a cycle.
LEVELS = [
    ("quantizers", 0),
    ("benchmark.files", 1), ("benchmark.device", 1), ("benchmark.registry", 1), ("benchmark.tracking.keys", 1),
    ("benchmark.data", 2), ("benchmark.models", 2),
    ("benchmark.tracking", 3), ("benchmark.evaluation", 3),
    ("benchmark.training", 4), ("benchmark.speed", 4),
    ("analysis", 5),
    ("sweeps", 6),
    ("benchmark.cli", 7), ("benchmark", 7),
]


def level(module: str) -> int:
    matches = [(prefix, lvl) for prefix, lvl in LEVELS if module == prefix or module.startswith(prefix + ".")]
    return max(matches, key=lambda match: len(match[0]))[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every project module ``path`` imports (absolute or relative), resolved to a module that exists."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in PACKAGES and target != name:
                found.add(target)
    return found


MODULES = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_no_module_imports_from_a_level_above_it():
    upward = sorted(f"{name} (level {level(name)}) imports {target} (level {level(target)})"
                    for name, targets in GRAPH.items() for target in targets
                    # a package's __init__ re-exporting its own rooms is not an upward import
                    if level(target) > level(name) and not target.startswith(name + "."))
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    # Tarjan's strongly connected components over module -> imported module (packages' __init__ files
    # that only re-export their children are skipped: importing a child runs its package's __init__).
    graph = {n: {t for t in ts if not n.startswith(t + ".") and not t.startswith(n + ".")} for n, ts in GRAPH.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, cycles


def test_no_module_over_the_size_limit():
    """~300 lines per module (the style's aim), with a little headroom: a module past 340 must be split."""
    long = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert not {name: n for name, n in long.items() if n > 340}, sorted(long.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.parametrize("room", ["benchmark.data", "benchmark.models", "benchmark.training", "benchmark.evaluation",
                                  "benchmark.tracking", "benchmark.speed", "benchmark.cli"])
def test_every_room_says_what_it_owns(room):
    doc = ast.get_docstring(ast.parse(MODULES[room].read_text()))
    assert doc and len(doc) > 20


def test_a_toy_source_and_backbone_plug_in_by_registration_alone(tmp_path, monkeypatch):
    """A new data source and a new backbone are a registration each: nothing in the trainer changes."""
    import torch
    from torch import nn

    from benchmark.data.dataset import Dataset, content_digest
    from benchmark.data.sources import register_source
    from benchmark.models.registry import register_backbone
    from benchmark.tracking import keys
    from benchmark.training.config import TrainConfig
    from benchmark.training.trainer import train

    monkeypatch.setenv("VQBENCH_CACHE", str(tmp_path))

    @register_source("toy-stripes", modality="image", description="test stripes")
    def load_stripes(request, cache_dir):
        generator = torch.Generator().manual_seed(0)
        images = (torch.rand(40, 1, 12, 12, generator=generator) * 255).to(torch.uint8)
        return Dataset("toy-stripes", "generated", images[:32], images[32:], content_digest(images[:32], images[32:]))

    class Pixels(nn.Module):   # each 2x2 patch -> one token through a linear map
        def __init__(self, latent_dim):
            super().__init__()
            self.to_latent = nn.Conv2d(1, latent_dim, 2, stride=2)

        def forward(self, images):
            return self.to_latent(images)

    @register_backbone("toy-linear", modality="image", tokens=lambda config: (config.image_size // 2) ** 2)
    def build_toy(config, channels):
        return Pixels(config.latent_dim), nn.ConvTranspose2d(config.latent_dim, channels, 2, stride=2)

    config = TrainConfig(quantizer="vq", codebook_size=16, latent_dim=4, dataset="toy-stripes", image_size=12,
                         backbone="toy-linear", steps=4, batch_size=4, eval_checkpoints=1, fid_samples=0,
                         log_every=2, probe_every=2, dead_code_window=2)
    metrics = train(config, progress=False).metrics
    assert metrics[keys.EVAL_TOKENS] == 8 * 36   # 8 test images x 6x6 tokens
    assert 0 < metrics[keys.EVAL_UTILIZATION] <= 1


def test_the_axis_registries_refuse_a_second_entry_under_a_name_and_list_the_known_ones_on_a_miss():
    from benchmark.data.sources import available_sources, get_source, register_source
    from benchmark.evaluation.modality import get_modality, register_modality
    from benchmark.models.registry import get_backbone, register_backbone

    photos = get_source("photos")
    register_source("photos", modality="image")(photos.load)   # a module imported again: the same entry
    assert get_source("photos").load is photos.load
    with pytest.raises(ValueError, match="data source 'photos' is registered twice"):
        register_source("photos", modality="image")(lambda request, cache_dir: None)
    with pytest.raises(ValueError, match=r"dataset must be one of \[.*'photos'.*\], got 'nope'"):
        get_source("nope")
    assert "speech" in available_sources()
    with pytest.raises(ValueError, match="backbone 'conv2d' is registered twice"):
        register_backbone("conv2d", modality="image", tokens=lambda config: 1)(lambda config, channels: None)
    with pytest.raises(ValueError, match=r"backbone must be one of \[.*'patch-mlp'.*\], got 'nope'"):
        get_backbone("nope")
    image = get_modality("image")
    assert register_modality(image) is image
    with pytest.raises(ValueError, match="modality 'image' is registered twice"):
        register_modality(dataclasses.replace(image, sample_noun="picture"))
    with pytest.raises(ValueError, match=r"modality must be one of \['image', 'audio'\], got 'nope'"):
        get_modality("nope")
