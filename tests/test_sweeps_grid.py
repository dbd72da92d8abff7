"""Sweep grids, presets, sweep files and the dry run: no Ray, no training."""
from __future__ import annotations

from collections import Counter

import math
from dataclasses import asdict

import pytest

from benchmark.cli import main
from sweeps.grid import (AXES, SweepGrid, Trial, base_config, expand_grid, override_grid,
                         parse_int_list)
from sweeps.presets import get_preset, mechanism, paper, quick
from sweeps.sweep_file import load_sweep_file


def shared_fields(trial: Trial) -> dict:
    return {k: v for k, v in asdict(trial.config).items() if k not in AXES + ("quantizer_options",)}


def test_quick_preset_covers_the_papers_table_with_seeds_where_the_ci_needs_them():
    grid = quick()
    assert sorted(grid.quantizers) == sorted(["vq", "ema", "fc", "fsq", "lfq", "lc", "simvq"])
    assert grid.codebook_sizes == [2 ** 8, 2 ** 10, 2 ** 12] and len(grid.latent_dims) == 1
    expansion = expand_grid(grid)
    per_quantizer = Counter(t.config.quantizer for t in expansion.trials)
    assert per_quantizer["vq"] == per_quantizer["simvq"] == 3 * 3      # 3 sizes x 3 seeds
    assert all(per_quantizer[q] == 3 for q in ("ema", "fc", "fsq", "lfq", "lc"))
    assert not expansion.skipped
    budgets = {tuple(sorted(shared_fields(t).items())) for t in expansion.trials}
    assert len(budgets) == 1, "every trial must get the identical budget"
    assert all(t.config.threads == 1 for t in expansion.trials)
    assert len({t.key for t in expansion.trials}) == len(expansion.trials)


def test_quick_preset_measures_its_largest_size_uncapped():
    from sweeps.measurement import measurement_plan

    grid = quick()
    rows = measurement_plan(grid.base, grid.codebook_sizes)
    assert all(not row.capped and row.ceiling > 0.9999 for row in rows)
    assert not measurement_plan(grid.base, [2 ** 12])[0].capped and measurement_plan(grid.base, [2 ** 14])[0].capped


def test_seeds_per_quantizer_round_trip_and_validate():
    grid = quick()
    assert SweepGrid.from_dict(grid.to_dict()) == grid
    with pytest.raises(ValueError, match="seeds_per_quantizer"):
        expand_grid(SweepGrid(["vq"], [64], [8], [0], seeds_per_quantizer={"simvq": [0, 1]}))
    # explicit --seeds replace the preset's per-quantizer seeds
    assert override_grid(grid, seeds=[5]).seeds_for("vq") == [5]


def test_mechanism_preset_runs_the_controls_with_three_seeds():
    grid = mechanism()
    assert {"vq", "simvq", "vq-simvq-init", "simvq-frozen-w", "simvq-train-c", "simvq-no-bias"} == set(grid.quantizers)
    assert grid.seeds == [0, 1, 2] and grid.base.steps > quick().base.steps
    assert len(expand_grid(grid).trials) == 6 * len(grid.codebook_sizes) * 3


def test_paper_preset_names_a_dataset_that_can_measure_2_18(tmp_path):
    from PIL import Image

    from sweeps.measurement import measurement_plan

    grid = paper()
    assert grid.codebook_sizes[0] == 2 ** 10 and grid.codebook_sizes[-1] == 2 ** 18
    assert grid.latent_dims == [8, 16, 32, 64, 128] and grid.seeds == [0, 1, 2]
    assert grid.base.dataset == "folder" and grid.base.optimizer == "adam-paper"
    with pytest.raises(ValueError, match="data_dir"):   # refused before anything runs without --data-dir
        expand_grid(grid)
    for index in range(40):
        Image.new("RGB", (70, 70), (index, 2 * index, 3 * index)).save(tmp_path / f"{index}.png")
    grid = override_grid(grid, budget={"data_dir": str(tmp_path)})
    expansion = expand_grid(grid)
    lfq = [t for t in expansion.trials if t.config.quantizer == "lfq"]
    assert {(t.codebook_size, t.config.latent_dim) for t in lfq} == {(k, int(math.log2(k))) for k in grid.codebook_sizes}
    fsq = [t for t in expansion.trials if t.config.quantizer == "fsq"]
    from quantizers.fsq import fsq_levels_for

    for t in fsq:
        levels = fsq_levels_for(t.config.codebook_size)
        assert t.codebook_size == math.prod(levels) and t.config.latent_dim == len(levels)
    # 40 images: a few test images of 256 tokens each cannot measure 2^18 codes, and the plan says so
    assert measurement_plan(grid.base, grid.codebook_sizes)[-1].capped
    assert grid.base.steps > quick().base.steps and grid.base.width >= quick().base.width


def test_impossible_combinations_are_skipped_with_their_reason():
    grid = SweepGrid(["lfq", "fsq", "vq"], [16, 1000, 1024], [8], [0])
    expansion = expand_grid(grid)
    skipped = {(s.quantizer, s.codebook_size): s.reason for s in expansion.skipped}
    assert "power of two" in skipped[("lfq", 1000)]
    assert ("fsq", 16) in skipped and "16" in skipped[("fsq", 16)]
    kept = {(t.config.quantizer, t.config.codebook_size) for t in expansion.trials}
    assert ("lfq", 1024) in kept and ("lfq", 16) in kept and ("vq", 1000) in kept
    assert ("lfq", 1000) not in kept and ("fsq", 16) not in kept


def test_a_grid_with_nothing_runnable_is_rejected():
    with pytest.raises(ValueError, match="no runnable trial"):
        expand_grid(SweepGrid(["lfq"], [1000], [8], [0]))


@pytest.mark.parametrize("change, message", [
    ({"quantizers": ["vq", "nope"]}, "unknown quantizer 'nope'"),
    ({"codebook_sizes": [1]}, "codebook_sizes must be integers >= 2"),
    ({"codebook_sizes": [256, 256]}, "codebook_sizes lists a value twice"),
    ({"latent_dims": []}, "latent_dims must list at least one value"),
    ({"seeds": [-1]}, "seeds must be integers >= 0"),
    ({"quantizer_options": {"vq": {"nope": 1}}}, r"unknown option\(s\) \['nope'\]"),
    ({"quantizer_options": {"simvq": {"beta": 1.0}}}, "not in the grid"),
])
def test_invalid_grids_name_the_argument(change, message):
    values = {"quantizers": ["vq"], "codebook_sizes": [256], "latent_dims": [8], "seeds": [0], **change}
    with pytest.raises(ValueError, match=message):
        expand_grid(SweepGrid(**values))


def test_budget_may_not_set_an_axis_and_unknown_fields_are_named():
    with pytest.raises(ValueError, match="sweep's axes"):
        base_config({"codebook_size": 4})
    with pytest.raises(ValueError, match="unknown budget field"):
        override_grid(quick(), budget={"stepz": 3})


def test_grid_round_trips_through_plain_data():
    grid = override_grid(quick(), quantizers=["vq", "simvq"], budget={"steps": 7},
                         quantizer_options={"vq": {"beta": 0.5}})
    again = SweepGrid.from_dict(grid.to_dict())
    assert [t.key for t in expand_grid(again).trials] == [t.key for t in expand_grid(grid).trials]
    trial = expand_grid(grid).trials[0]
    assert Trial.from_dict(trial.as_dict()) == trial
    assert trial.run_name == "vq K=256 d=32 seed=0"


def test_parse_int_list_accepts_powers():
    assert parse_int_list("--codebook-sizes", "2^8, 1024,2**12") == [256, 1024, 4096]
    with pytest.raises(ValueError, match="--seeds"):
        parse_int_list("--seeds", "0,x")


def test_sweep_files_in_yaml_and_toml(tmp_path):
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text("preset: quick\nname: mine\nquantizers: [vq, simvq]\ncodebook_sizes: [64, 128]\n"
                         "budget: {steps: 12}\nquantizer_options: {vq: {beta: 0.5}}\n")
    loaded = load_sweep_file(yaml_file)
    assert loaded.name == "mine" and loaded.budget == {"steps": 12}
    toml_file = tmp_path / "s.toml"
    toml_file.write_text('quantizers = ["vq"]\nseeds = [0, 1]\n[budget]\nsteps = 5\n')
    assert load_sweep_file(toml_file).seeds == [0, 1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("quantizer: [vq]\n")
    with pytest.raises(ValueError, match="unknown key"):
        load_sweep_file(bad)
    json_file = tmp_path / "s.json"
    json_file.write_text("{}")
    with pytest.raises(ValueError, match=".yaml, .yml or .toml"):
        load_sweep_file(json_file)


def test_dry_run_of_the_presets_prints_trials_budget_and_test_tokens(capsys, tmp_path):
    assert main(["sweep", "--preset", "quick", "--dry-run", "--no-estimate", "--name", "q"]) == 0
    out = capsys.readouterr().out
    expected = len(expand_grid(get_preset("quick")).trials)
    assert "sweep q (preset quick)" in out and f"{expected} trials x" in out and "samples per trial" in out
    assert "lfq" in out and "FSQ levels" in out
    assert "K=   4096:    60,672 test tokens" in out and "measurable" in out
    assert main(["sweep", "--preset", "paper", "--dry-run"]) == 2
    assert "data_dir" in capsys.readouterr().err
    from PIL import Image

    for number in range(40):  # real images: a dry run decodes a sample (an empty or corrupt folder is refused)
        Image.new("RGB", (80, 72), (number * 6, 80, 160)).save(tmp_path / f"img{number:02d}.png")
    assert main(["sweep", "--preset", "paper", "--dry-run", "--no-estimate", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "trials x 20000 steps" in out and "K= 262144" in out and "CAPPED" in out


def test_flags_and_file_override_the_preset(tmp_path, capsys):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("quantizers: [vq, lfq]\ncodebook_sizes: [256, 1000]\nbudget: {steps: 40}\n")
    code = main(["sweep", "--config", str(sweep_file), "--seeds", "0,1", "--batch-size", "8",
                 "--set", "width=16", "--dry-run", "--no-estimate"])
    assert code == 0
    out = capsys.readouterr().out
    assert "6 trials x 40 steps x batch 8" in out  # vq 2 sizes x 2 seeds + lfq 256 x 2 seeds
    assert "skipped lfq K=1000" in out and "width 16" in out


def test_bad_flags_are_clean_errors(capsys):
    assert main(["sweep", "--quantizers", "vq,bogus", "--dry-run"]) == 2
    assert "unknown quantizer 'bogus'" in capsys.readouterr().err
    assert main(["sweep", "--resume", "x", "--steps", "3"]) == 2
    assert "drop --steps" in capsys.readouterr().err
    assert main(["sweep", "--set", "steps", "--dry-run"]) == 2
    assert "FIELD=VALUE" in capsys.readouterr().err


def test_the_budget_line_and_run_description_speak_of_the_presets_modality():
    from sweeps.report import budget_text, description_markdown

    for preset, says, never in [("quick", ["photos at 32 px", "backbone patch-mlp", "all test images"], "clips"),
                                ("audio-quick", ["16,000-sample clips at 16,000 Hz", "backbone codec1d",
                                                 "400 clips"], " px")]:
        grid = get_preset(preset)
        expansion = expand_grid(grid)
        text = budget_text(grid, expansion) + description_markdown("s", preset, grid, expansion)
        assert all(phrase in text for phrase in says) and never not in text, text


def test_a_trial_line_shows_the_quality_its_modality_logged():
    from benchmark.tracking import keys
    from sweeps.console import trial_line

    image = trial_line(3, 20, "vq K=16 d=4 seed=0", {keys.EVAL_UTILIZATION: 0.5, keys.EVAL_PSNR: 24.126,
                                                     keys.COST_WALL_TIME: 38}, "4 min")
    audio = trial_line(4, 20, "vq K=16 d=4 seed=0", {keys.EVAL_UTILIZATION: 0.25, keys.EVAL_SI_SNR: -37.0,
                                                     keys.COST_WALL_TIME: 61}, None)
    assert image == "[ 3/20] vq K=16 d=4 seed=0   utilization 0.500   PSNR 24.13 dB   38 s   ETA 4 min"
    assert audio == "[ 4/20] vq K=16 d=4 seed=0   utilization 0.250   SI-SNR -37.00 dB   1 min 01 s"
