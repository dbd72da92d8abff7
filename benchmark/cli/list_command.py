"""List the registered quantizers, their options and defaults."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    import json

    import quantizers

    entries = [quantizers.describe(name) for name in quantizers.available()]
    if args.json:
        print(json.dumps([
            {**e, "options": [{"name": p.name, "default": p.default, "type": p.annotation} for p in e["options"]]}
            for e in entries
        ], indent=2, default=str))
        return 0
    width = max([8, *(len(e["name"]) for e in entries)])
    for e in entries:
        print(f"{e['name']:{width}s} {e['summary']}")
        if e.get("base"):  # a variant: its base with options preset (those cannot be set)
            preset = ", ".join(f"{key}={value!r}" for key, value in e["preset"].items())
            print(f"{'':10s}= {e['base']} with {preset}")
        for p in e["options"]:
            print(f"{'':10s}--{p.name}: {p.annotation or 'value'} = {p.default!r}")
    return 0
