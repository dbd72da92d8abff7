"""The speed benchmark harness (issue 7): real subprocesses, real torch, real reference when installed.
Timings are never compared here; only that every configuration yields a sensible record."""
from __future__ import annotations

import json

import pytest

from benchmark import cli
from benchmark.speed.config import FLOOR, BenchCase
from benchmark.speed.reference import REFERENCE_FOR_METHOD, reference_available
from benchmark.speed.report import markdown_table
from benchmark.speed.runner import run_case

IMPOSSIBLE_K = 2**40  # a 2^40 x 8 fp32 codebook is 32 TiB


@pytest.mark.slow
def test_bench_tiny_grid_writes_one_record_per_config_and_survives_an_impossible_one(tmp_path):
    out = tmp_path / "speed"
    argv = ["bench", "--quick", "--quantizers", "vq", "--sizes", f"64,{IMPOSSIBLE_K}", "--threads", "1",
            "--timeout", "60", "--memory-limit", "4", "--out", str(out)]
    if not reference_available():
        argv.append("--no-reference")
    assert cli.main(argv) == 0

    payload = json.loads((out / "speed.json").read_text())
    records, machine = payload["records"], payload["machine"]
    assert machine["torch_threads"] == 1 and machine["torch"] and machine["date_utc"]
    assert machine["command"].startswith("vqbench bench --quantizers vq --sizes 64,")

    implementations = ["vq", FLOOR] + ([REFERENCE_FOR_METHOD["vq"]] if reference_available() else [])
    keys = sorted((r["implementation"], r["codebook_size"]) for r in records)
    assert keys == sorted((name, size) for name in implementations for size in (64, IMPOSSIBLE_K))
    for record in records:
        assert record["dim"] == 8 and record["tokens"] == 256
        if record["codebook_size"] == IMPOSSIBLE_K:
            assert record["status"] == "out_of_memory", record
            assert record["error"]
        else:
            assert record["status"] == "ok", record
            assert record["step_time_s"] > 0 and record["repeats_done"] == 1
            assert record["peak_memory_bytes"] > 0 and record["extra_memory_bytes"] >= 0
            assert record["peak_memory_bytes"] >= record["baseline_memory_bytes"]
    assert next(r for r in records if r["implementation"] == "vq" and r["codebook_size"] == 64)[
        "parameters"] == 64 * 8

    table = (out / "speed.md").read_text()
    assert "| vq | 64 |" in table
    assert f"| vq | {IMPOSSIBLE_K:,} | OOM |" in table
    assert (out / "speed_vs_K.png").stat().st_size > 0


def test_a_config_is_measured_in_its_own_child_process():
    # the child is `python -m benchmark.speed --worker CASE_JSON`: it must exist and report back
    case = BenchCase(implementation=FLOOR, codebook_size=64, dim=8, tokens=64, repeats=1)
    record = run_case(case, timeout_s=60, memory_limit_bytes=None)
    assert record["status"] == "ok", record
    assert record["source"] == "floor" and record["step_time_s"] > 0 and record["gflops_per_s"] > 0


def test_a_config_past_its_timeout_is_killed_and_recorded():
    case = BenchCase(implementation="vq", codebook_size=64, dim=8, tokens=64, repeats=1)
    record = run_case(case, timeout_s=0.2, memory_limit_bytes=None)
    assert record["status"] == "timeout"
    assert "timeout" in record["error"]


def test_a_config_past_the_memory_limit_is_killed_and_recorded():
    # importing torch alone takes far more than 64 MiB of resident memory
    case = BenchCase(implementation="vq", codebook_size=64, dim=8, tokens=64, repeats=1)
    record = run_case(case, timeout_s=60, memory_limit_bytes=64 * 2**20)
    assert record["status"] == "out_of_memory"
    assert record["peak_memory_bytes"] > 64 * 2**20


def test_unknown_quantizer_is_a_clean_cli_error(tmp_path, capsys):
    assert cli.main(["bench", "--quantizers", "nope", "--out", str(tmp_path)]) == 2
    assert "--quantizers must be" in capsys.readouterr().err
    assert cli.main(["bench", "--sizes", "2^x", "--out", str(tmp_path)]) == 2
    assert "--sizes" in capsys.readouterr().err


@pytest.mark.skipif(not reference_available(), reason="vector-quantize-pytorch not installed")
@pytest.mark.parametrize("implementation", sorted(REFERENCE_FOR_METHOD.values()))
def test_each_reference_adapter_runs_forward_and_backward(implementation):
    import torch

    from benchmark.speed.reference import build_reference

    torch.manual_seed(0)
    reference = build_reference(implementation, dim=8, codebook_size=256)
    z = torch.randn(2, 16, 8, requires_grad=True)
    quantized, aux_loss = reference.call(z)
    assert quantized.shape == z.shape and aux_loss.dim() == 0
    (quantized.square().mean() + aux_loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert reference.effective_codebook_size > 1


def test_table_pairs_ours_with_reference_and_floor():
    def record(implementation, method, source, seconds, memory):
        return {"implementation": implementation, "method": method, "source": source, "codebook_size": 1024,
                "dim": 64, "status": "ok", "step_time_s": seconds, "peak_memory_bytes": memory,
                "extra_memory_bytes": memory}

    records = [record("vq", "vq", "vqbench", 2.0, 100), record("ref:VectorQuantize", "vq", "vector-quantize-pytorch",
                                                                8.0, 1000), record(FLOOR, "floor", "floor", 1.0, 50)]
    row = next(line for line in markdown_table(records).splitlines() if line.startswith("| vq |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:7] == ["vq", "1,024", "2 s", "8 s", "1 s", "2.00", "0.25"]
    assert cells[-1] == "0.10"
