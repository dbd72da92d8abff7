"""The quantizer registry: build by name, list, describe, clear errors; and `vqbench list`."""
from __future__ import annotations

import json

import pytest
import torch

import quantizers
from benchmark.cli import main
from quantizers import registry
from quantizers.base import Quantizer, QuantizerOutput

FIVE = ["ema", "fsq", "lfq", "simvq", "vq"]


def test_available_lists_the_five_quantizers_sorted():
    names = quantizers.available()
    assert names == sorted(names)
    assert set(FIVE) <= set(names)


@pytest.mark.parametrize("name", FIVE)
def test_every_quantizer_builds_by_name_and_keeps_the_contract(name):
    torch.manual_seed(0)
    quantizer = quantizers.build(name, dim=8, codebook_size=256)
    assert isinstance(quantizer, quantizers.get_class(name)) and quantizer.registry_name == name
    assert quantizer.dim == 8
    out = quantizer(torch.randn(2, 5, 8))
    assert isinstance(out, QuantizerOutput)
    assert out.codebook_size == quantizer.codebook_size
    assert out.quantized.shape == (2, 5, 8) and out.indices.shape == (2, 5)


def test_build_passes_options_through():
    quantizer = quantizers.build("lfq", dim=4, codebook_size=16, entropy_weight=0.5, codebook_entropy="factorized")
    assert quantizer.entropy_weight == 0.5 and quantizer.codebook_entropy == "factorized"
    assert quantizers.build("fsq", dim=3, codebook_size=64, levels=[4, 4, 4]).levels == (4, 4, 4)


def test_unknown_name_is_a_value_error_listing_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown quantizer 'vqq'; available: \[.*'fsq'.*'lfq'.*\]"):
        quantizers.build("vqq", dim=4, codebook_size=16)
    with pytest.raises(ValueError, match="unknown quantizer"):
        quantizers.describe("vqq")


def test_unknown_option_is_a_value_error_naming_it_and_the_accepted_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['level'\] for quantizer 'fsq'; accepted: \['levels'\]"):
        quantizers.build("fsq", dim=4, codebook_size=1024, level=[8, 5, 5, 5])
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['gamma'\] for quantizer 'lfq'"):
        quantizers.build("lfq", dim=4, codebook_size=16, gamma=1.0)


def test_describe_reports_options_with_their_defaults():
    fsq = quantizers.describe("fsq")
    assert fsq["name"] == "fsq" and fsq["class"] == "FiniteScalarQuantizer"
    assert fsq["summary"].startswith("Finite scalar quantization")
    assert {p.name: p.default for p in fsq["options"]} == {"levels": None}
    lfq = {p.name: p.default for p in quantizers.describe("lfq")["options"]}
    assert lfq == {"entropy_weight": 0.1, "diversity_gamma": 1.0, "beta": 0.25, "temperature": 0.01,
                   "codebook_entropy": "exact"}


def test_register_makes_a_new_module_buildable_without_other_changes(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # restored after the test

    @registry.register("identity-test")
    class Identity(Quantizer):
        """Passes z through (test only)."""

        def __init__(self, dim: int, codebook_size: int, scale: float = 1.0):
            super().__init__(dim, codebook_size)
            self.scale = scale

    assert "identity-test" in quantizers.available()
    assert quantizers.build("identity-test", dim=2, codebook_size=4, scale=2.0).scale == 2.0
    assert [p.name for p in quantizers.describe("identity-test")["options"]] == ["scale"]


def test_register_rejects_non_quantizers_and_name_clashes():
    with pytest.raises(TypeError, match="must decorate a Quantizer subclass"):
        registry.register("not-a-quantizer")(dict)

    class Other(Quantizer):
        pass

    with pytest.raises(ValueError, match="quantizer name 'vq' is already registered"):
        registry.register("vq")(Other)
    assert quantizers.get_class("vq") is not Other


def test_vqbench_list_prints_every_quantizer_with_its_options(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert listed == quantizers.available()
    assert set(FIVE) <= set(listed)
    assert "--levels" in out and "--codebook_entropy: str = 'exact'" in out


def test_vqbench_list_json(capsys):
    assert main(["list", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert set(FIVE) <= set(entries)
    assert {o["name"]: o["default"] for o in entries["lfq"]["options"]}["temperature"] == 0.01
