"""The benchmark's arithmetic and its truncation table; the quick run checks every measurement still runs."""

import json
import sys

import pytest

from bench.bench import TARGETS, Target, judged, median_ratio, table
from bench.measure import memory_cgroup_parent
from bench.truncation import kept_ends, truncation_coverage
from tests.conftest import ROOT, SHARED_IMDB, run


def test_each_ratio_is_the_median_of_the_rounds_ratios():
    assert median_ratio([10, 30, 20], [5, 10, 10]) == 2.0  # ratios 2, 3, 2
    assert median_ratio([1.0], [4.0]) == 0.25
    with pytest.raises(ValueError):
        median_ratio([1, 2], [1])


def test_targets_check_their_direction():
    faster = Target("x", "speed-up", 4.0, at_least=True)
    smaller = Target("y", "size", 0.3, at_least=False)
    assert faster.met(4.0) and not faster.met(3.9) and faster.describe() == ">= 4x"
    assert smaller.met(0.25) and not smaller.met(0.31) and smaller.describe() == "<= 0.3x"
    assert {t.key for t in TARGETS} >= {"train_speedup_rotten_tomatoes", "noop_repro_scale", "predict_speedup"}


def test_which_ends_of_a_long_text_each_strategy_keeps():
    # 300 tokens cut to 100: the first sentence has 10 tokens, the last 40
    assert kept_ends(10, 40, 300, 100, "head") == (True, False)
    assert kept_ends(10, 40, 300, 100, "tail") == (False, True)
    assert kept_ends(10, 40, 300, 100, "head+tail") == (True, True)  # 25 from the start, 75 from the end
    assert kept_ends(30, 40, 300, 100, "head+tail") == (False, True)
    assert kept_ends(90, 90, 90, 100, "head") == (True, True)  # not cut at all


def test_truncation_coverage_on_real_tokenization(tiny_model):
    from finetune.training.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model))
    long = "It opens well. " + "The middle drags on and on. " * 30 + "In the end I loved it."
    table_ = truncation_coverage(["Short and sweet.", long], tokenizer, 32)
    assert table_["head"] == {"truncated": 0.5, "tokens_kept": pytest.approx(table_["tail"]["tokens_kept"]),
                              "first_sentence_kept": 1.0, "last_sentence_kept": 0.5}
    assert table_["tail"]["first_sentence_kept"] == 0.5 and table_["tail"]["last_sentence_kept"] == 1.0
    assert table_["head+tail"]["first_sentence_kept"] == 1.0 and table_["head+tail"]["last_sentence_kept"] == 1.0


def test_table_lists_every_target():
    figures = {t.key: {"what": t.what, "value": 1.0, "target": t.describe(), "met": True} for t in TARGETS}
    coverage = {"128": {"head": {"truncated": 0.9, "tokens_kept": 0.6, "first_sentence_kept": 1.0,
                                 "last_sentence_kept": 0.1}}}
    text = table({"figures": figures, "truncation_coverage": coverage})
    # 8, 8 of the scale section, 2 of LoRA's, 1 of long documents' and 1 of Ray's
    assert text.count("| yes |") == sum(t.bound is not None for t in TARGETS) == 20
    assert "| 128 | head | 90% | 60% | 100% | 10% |" in text


def test_a_partial_run_shows_only_what_it_measured():
    figures = judged({"scale_split_vs_download": 0.5, "scale_download_vs_floor": 5.0})
    assert list(figures) == ["scale_download_vs_floor", "scale_split_vs_download"]  # the order of TARGETS
    text = table({"figures": figures})
    assert text.count("| yes |") == 1 and text.count("| NO |") == 1 and "IMDB test reviews" not in text


@pytest.mark.bench
def test_quick_scale_only_bench_measures_the_scale_section(tmp_path, tiny_model):
    out = tmp_path / "scale.json"
    run(["python", "-m", "bench.bench", "--quick", "--scale-only", "--model", str(tiny_model), "--out", str(out)],
        ROOT)
    figures = json.loads(out.read_text())["figures"]
    limited = {"scale_stages_within_limit", "scale_limited_slowdown"}  # measured where a memory cgroup can be made
    expected = {t.key for t in TARGETS if t.key.startswith("scale_")} - (set() if memory_cgroup_parent() else limited)
    assert set(figures) == expected
    if memory_cgroup_parent():
        assert figures["scale_stages_within_limit"]["value"] == 3  # tiny data fits in the limit


@pytest.mark.bench
def test_quick_lora_only_bench_trains_both_ways_per_seed(tmp_path, tiny_model):
    out = tmp_path / "lora.json"
    result = run(["python", "-m", "bench.bench", "--quick", "--lora-only", "--seeds", "1", "2", "--model",
                  str(tiny_model), "--out", str(out)], ROOT)
    bench = json.loads(out.read_text())
    assert set(bench["figures"]) == {t.key for t in TARGETS if t.key.startswith(("full_", "lora_"))}
    assert [run["seed"] for run in bench["runs"]["lora"]] == [1, 2]
    full, lora = bench["runs"]["full"][0], bench["runs"]["lora"][0]
    assert 0 < lora["trained_parameters"] < full["trained_parameters"] == full["total_parameters"]
    assert all(0 <= r["test_accuracy"] <= 1 and r["train_samples_per_s"] > 0 for r in (full, lora))
    assert bench["setup"]["lora"]["learning_rate"] == 2e-3 and bench["setup"]["lora"]["adapter"] == "lora"
    assert "| LoRA: parameters trained (adapters and head) |" in result.stdout


@pytest.mark.bench
@pytest.mark.skipif(not SHARED_IMDB.is_file(), reason=f"the IMDB archive is not at {SHARED_IMDB}")
def test_quick_predict_only_bench_measures_the_prediction_section(tmp_path, tiny_model):
    out = tmp_path / "predict.json"
    run(["python", "-m", "bench.bench", "--quick", "--predict-only", "--rounds", "2", "--model", str(tiny_model),
         "--out", str(out)], ROOT)
    bench = json.loads(out.read_text())
    assert set(bench["figures"]) == {"predict_speedup", "predict_speedup_torch", "predict_speedup_bf16"}
    assert all(len(values) == 2 for values in bench["measurements"].values())


@pytest.mark.bench
@pytest.mark.skipif(not SHARED_IMDB.is_file(), reason=f"the IMDB archive is not at {SHARED_IMDB}")
def test_quick_windows_only_bench_runs_every_strategy_through_the_stages(tmp_path, tiny_model):
    out = tmp_path / "windows.json"
    run(["python", "-m", "bench.bench", "--quick", "--windows-only", "--lengths", "128", "--model",
         str(tiny_model), "--out", str(out)], ROOT)
    bench = json.loads(out.read_text())
    assert [r["strategy"] for r in bench["runs"]] == ["windows-mean", "windows-max", "head+tail", "head"]
    assert set(bench["figures"]) == {"windows_gain_points_128"}
    windows = bench["runs"][0]
    assert windows["windows_per_review"] > 1 and 0 < windows["longer_than_budget"] <= 1
    assert all(0 <= r["test_accuracy"] <= 1 and r["train_s_per_epoch"] > 0 for r in bench["runs"])
    assert all(r["predict_ms_per_review"] > 0 for r in bench["runs"])  # the export's `predict` on the test reviews


@pytest.mark.bench
@pytest.mark.skipif(not SHARED_IMDB.is_file(), reason=f"the IMDB archive is not at {SHARED_IMDB}")
def test_quick_ray_only_bench_times_both_pools_and_single_process_predict(tmp_path, tiny_model):
    out = tmp_path / "ray.json"
    run(["python", "-m", "bench.bench", "--quick", "--ray-only", "--model", str(tiny_model), "--out", str(out)],
        ROOT)
    bench = json.loads(out.read_text())
    assert set(bench["figures"]) == {"ray_2_workers_speedup", "ray_1_worker_against_single_process",
                                     "ray_overhead_same_cores"}
    assert set(bench["texts_per_s"]) == {"single_process", "ray_1_worker", "ray_2_workers", "ray_1_worker_every_core"}
    assert all(value > 0 for value in bench["texts_per_s"].values()) and bench["setup"]["texts"] == 64


@pytest.mark.bench
@pytest.mark.skipif(not SHARED_IMDB.is_file(), reason=f"the IMDB archive is not at {SHARED_IMDB}")
def test_quick_bench_runs_every_measurement(tmp_path, tiny_model):
    """`--quick` runs every measurement at tiny sizes (the figures mean nothing): the bench cannot rot."""
    out = tmp_path / "bench.json"
    result = run(["python", "-m", "bench.bench", "--quick", "--rounds", "1", "--model", str(tiny_model),
                  "--out", str(out)], ROOT)
    bench = json.loads(out.read_text())
    assert set(bench["figures"]) == {t.key for t in TARGETS if not t.key.startswith(("full_", "lora_", "windows_"))}
    assert all(figure["value"] > 0 for figure in bench["figures"].values())
    assert set(bench["truncation_coverage"]) == {"128", "512"}
    assert "| training samples/s, ours / recipe, Rotten Tomatoes |" in result.stdout


def test_gpu_check_script_runs_its_smoke_configuration_on_the_cpu(tmp_path):
    """bench/gpu_check.py needs a GPU for its figures; --smoke runs the same code on tiny CPU models: DistilBERT's
    architecture in fp32 and bf16, then a Qwen2-architecture decoder trained in full, with LoRA, and with LoRA and
    gradient checkpointing."""
    out = tmp_path / "gpu_check.json"
    result = run(["python", "bench/gpu_check.py", "--smoke", "--out", str(out)], ROOT)
    check = json.loads(out.read_text())
    assert check["info"]["bf16_matmul_tflops"] > 0
    rows = check["rows"]
    assert [(r["model"], r["training"], r["precision"], r["compiled"]) for r in rows] == [
        ("distilbert", "full", "fp32", False), ("distilbert", "full", "bf16", False),
        ("qwen2-tiny", "full", "bf16", False), ("qwen2-tiny", "lora", "bf16", False),
        ("qwen2-tiny", "lora+checkpointing", "bf16", False)]
    assert all(r["samples_per_s"] > 0 and r["note"] == "" for r in rows)
    assert all(r["share_of_bf16_rate"] > 0 for r in rows[:2])
    full, lora, checkpointed = (r["trained_parameters"] for r in rows[2:])
    assert 0 < lora == checkpointed < full / 5  # the adapters and the head only
    assert "| model | training | trained params | tokens |" in result.stdout
    assert "| qwen2-tiny | lora |" in result.stdout


def test_peak_memory_is_the_measuring_process_own_not_its_parents():
    """Linux carries ru_maxrss over fork and exec; the bench's parent is large, its measurements must not be."""
    parent = bytearray(400 * 1024 * 1024)
    parent[::4096] = b"\1" * len(parent[::4096])  # touched, so resident
    script = ("from bench.measure import peak_rss_mb\n"
              "before = peak_rss_mb()\n"
              "block = bytearray(200 * 1024 * 1024)\n"
              "block[::4096] = b'\\1' * len(block[::4096])\n"
              "print(before, peak_rss_mb())")
    before, after = map(float, run([sys.executable, "-c", script], ROOT).stdout.split())
    assert before < 300 and after - before > 190
    del parent


@pytest.mark.skipif(memory_cgroup_parent() is None, reason="no writable memory cgroup here")
def test_a_stage_killed_for_memory_in_its_cgroup_reads_as_not_within_the_limit(tmp_path):
    """The scale section's limited runs: a stage the kernel stops in its memory cgroup is a figure (0), not a
    crash of the bench, and the group is removed after."""
    from bench.measure import measure_stage
    from tests.project import copy_project

    repo = copy_project(tmp_path / "repo")
    assert measure_stage("check_params", str(repo), memory_limit_mb=20)["within_limit"] == 0.0
    assert measure_stage("check_params", str(repo), memory_limit_mb=1536)["within_limit"] == 1.0
    assert not list(memory_cgroup_parent().glob("finetune-bench-*"))
