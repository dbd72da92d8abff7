"""Writing the results: ``speed.json`` (raw records + machine), ``speed.md`` (one table per dim, each of
our methods beside its reference and the floor) and ``speed_vs_K.png`` (step time vs K, log-log)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmark.speed.config import FLOOR
from benchmark.speed.reference import REFERENCE_FOR_METHOD

_STATUS_LABEL = {"out_of_memory": "OOM", "timeout": "timeout", "unsupported": "n/a", "error": "error",
                 "killed": "killed", "skipped": "skipped"}


def cell_time(record: dict | None) -> str:
    if record is None:
        return "—"
    if record.get("status") != "ok":
        return _STATUS_LABEL.get(record.get("status"), str(record.get("status")))
    seconds = record["step_time_s"]
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def cell_memory(record: dict | None) -> str:
    if record is None or not record.get("peak_memory_bytes"):
        return "—"
    size = record["peak_memory_bytes"]
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def _ratio(numerator: dict | None, denominator: dict | None, key: str) -> str:
    if not numerator or not denominator or numerator.get("status") != "ok" or denominator.get("status") != "ok":
        return "—"
    top, bottom = numerator.get(key), denominator.get(key)
    if top is None or not bottom or bottom <= 0:
        return "—"
    ratio = top / bottom
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"  # keep two significant digits when small


def markdown_table(records: list[dict], info: dict | None = None) -> str:
    """One table per dim: each of our methods at each K beside its reference and the floor."""
    lookup = {(r["implementation"], r["codebook_size"], r["dim"]): r for r in records}
    methods = [m for m in dict.fromkeys(r["method"] for r in records if r["source"] == "vqbench")]
    lines = []
    if info:
        lines += [
            f"Command: `{info['command']}`  ",
            f"Machine: {info['cpu']} ({info['cpu_count']} cores), torch {info['torch']}, "
            f"{info['torch_threads']} thread(s), device {info['device']}"
            + (f" ({info['cuda_device']})" if info.get("cuda_device") else "")
            + f", vector-quantize-pytorch {info['vector_quantize_pytorch'] or 'not installed'}, "
            f"{info['date_utc']}, load average at start {info['load_average_at_start']}.  ",
            f"Step: {info['step']}; median of up to {records[0].get('repeats', '?') if records else '?'} "
            f"repeats after warm-up. Memory: peak resident set of the configuration's own process "
            f"(CUDA: max_memory_allocated). Memory ratio: extra memory above the process's baseline "
            f"before the first step (imports, inputs and parameters excluded).",
            "",
        ]
    for dim in sorted({r["dim"] for r in records}):
        lines += [f"### dim = {dim}", "",
                  "| method | K | ours | reference | floor | ours / floor | ours / reference "
                  "| ours peak mem | reference peak mem | memory ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for method in methods:
            for size in sorted({r["codebook_size"] for r in records if r["dim"] == dim}):
                ours = lookup.get((method, size, dim))
                if ours is None:
                    continue
                reference = lookup.get((REFERENCE_FOR_METHOD.get(method, ""), size, dim))
                floor = lookup.get((FLOOR, size, dim))
                lines.append(
                    f"| {method} | {size:,} | {cell_time(ours)} | {cell_time(reference)} | {cell_time(floor)} "
                    f"| {_ratio(ours, floor, 'step_time_s')} | {_ratio(ours, reference, 'step_time_s')} "
                    f"| {cell_memory(ours)} | {cell_memory(reference)} "
                    f"| {_ratio(ours, reference, 'extra_memory_bytes')} |"
                )
        lines.append("")
    notes = [r for r in records if r.get("note")]
    if notes:
        lines += ["Notes:", ""]
        lines += [f"- {r['implementation']} K={r['codebook_size']:,} dim={r['dim']}: {r['note']}" for r in notes]
        lines.append("")
    failures = [r for r in records if r.get("status") != "ok"]
    if failures:
        lines += ["Not measured:", ""]
        lines += [f"- {r['implementation']} K={r['codebook_size']:,} dim={r['dim']}: {r['status']} "
                  f"({r.get('error', '')})".replace("|", "/") for r in failures]
        lines.append("")
    return "\n".join(lines)


def plot_step_times(records: list[dict], path: Path) -> None:
    """Step time vs K, log-log, one panel per dim: ours solid, reference dashed, floor dotted black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["dim"] for r in records})
    figure, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4.5), squeeze=False)
    colours = {}
    for axis, dim in zip(axes[0], dims):
        for implementation in dict.fromkeys(r["implementation"] for r in records):
            points = sorted((r["codebook_size"], r["step_time_s"]) for r in records
                            if r["implementation"] == implementation and r["dim"] == dim and r.get("status") == "ok")
            if not points:
                continue
            method = next(r["method"] for r in records if r["implementation"] == implementation)
            style = {"vqbench": "-", "vector-quantize-pytorch": "--", "floor": ":"}[
                next(r["source"] for r in records if r["implementation"] == implementation)]
            colour = "black" if method == "floor" else colours.setdefault(method, f"C{len(colours)}")
            label = implementation.replace("ref:", "vector-quantize-pytorch ")
            axis.plot(*zip(*points), style, marker="o", color=colour, label=label)
        axis.set(xscale="log", yscale="log", xlabel="codebook size K", ylabel="step time (s)",
                 title=f"dim = {dim}")
        sizes = sorted({r["codebook_size"] for r in records if r["dim"] == dim})
        axis.set_xticks(sizes, [_power_of_two_label(size) for size in sizes])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _power_of_two_label(size: int) -> str:
    exponent = size.bit_length() - 1
    return f"$2^{{{exponent}}}$" if size == 1 << exponent else f"{size:,}"


def write_results(records: list[dict], info: dict, out_dir: Path) -> dict[str, Path]:
    """Write speed.json, speed.md and speed_vs_K.png to ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "speed.json", "markdown": out_dir / "speed.md", "figure": out_dir / "speed_vs_K.png"}
    paths["json"].write_text(json.dumps({"machine": info, "records": records}, indent=2) + "\n")
    paths["markdown"].write_text("# Quantizer step time and memory\n\n" + markdown_table(records, info) + "\n")
    if any(r.get("status") == "ok" for r in records):
        plot_step_times(records, paths["figure"])
    else:
        del paths["figure"]
    return paths
