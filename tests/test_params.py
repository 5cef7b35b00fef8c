"""params.yaml is parsed into typed objects; bad keys fail at once with their names."""

from pathlib import Path

import pytest
import yaml

from finetune.params import Params, ParamsError, listed_params, load_params, parse_params, stage_params

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_are_the_documented_defaults():
    params = load_params(ROOT / "params.yaml")
    assert params == Params()  # params.yaml and the typed defaults say the same
    assert params.seed == 42 and params.data.source == "rotten_tomatoes" and params.model.name == "minilm"
    assert (params.train.learning_rate, params.train.batch_size, params.train.epochs) == (2e-5, 16, 3)
    assert (params.train.weight_decay, params.train.early_stopping_patience) == (0.01, 2)
    assert (params.tokenize.max_length, params.tokenize.truncation) == (128, "head")
    assert params.evaluate.uncertain_threshold == 0.8 and params.split.val_size == 0.1


@pytest.mark.parametrize(("raw", "named"), [
    ({"train": {"learnin_rate": 1e-4}}, "train.learnin_rate: unknown key"),
    ({"extra": 1}, "extra: unknown key"),
    ({"train": {"epochs": "three"}}, "train.epochs"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"learning_rate": -1}}, "train.learning_rate"),
    ({"split": {"val_size": 1.5}}, "split.val_size"),
    ({"evaluate": {"uncertain_threshold": 2}}, "evaluate.uncertain_threshold"),
    ({"tokenize": {"truncation": "middle"}}, "tokenize.truncation"),
    ({"data": {"encoding": "klingon-8"}}, "data.encoding"),
    ({"data": {"text_columns": []}}, "data.text_columns"),
    ({"data": {"labels": ["a", "a"]}}, "data.labels"),
    ({"data": {"sha256": "abc"}}, "data.sha256"),
    ({"data": {"max_samples": 0}}, "data.max_samples"),
    ({"train": {"num_processes": 0}}, "train.num_processes"),
    ({"export": {"onnx": False, "int8": True}}, "export.int8 quantises the ONNX model: set export.onnx to true"),
    ({"export": {"parity_tolerance": 0}}, "export.parity_tolerance"),
])
def test_bad_values_name_their_key(raw, named):
    with pytest.raises(ParamsError, match=named.replace(".", r"\.")):
        parse_params(raw)


def test_yaml_floats_written_by_dvc_are_accepted():
    # `dvc exp run -S train.learning_rate=5e-5` writes 5e-05, which YAML 1.1 reads as a string
    assert parse_params(yaml.safe_load("train: {learning_rate: 5e-05}")).train.learning_rate == 5e-5


def test_not_yaml_and_missing_file(tmp_path):
    broken = tmp_path / "params.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    broken.write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(broken)


def test_every_listed_key_exists():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    defaults = Params().model_dump()
    for stage in stages:
        for key in listed_params(stage, ROOT / "dvc.yaml"):
            node = defaults
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{stage} lists unknown params key {key}"
                node = node[part]


def test_stage_view_refuses_keys_the_stage_does_not_list(tmp_path):
    (tmp_path / "params.yaml").write_text("train: {epochs: 5}\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "x", "params": ["seed", "train"]}}}))
    params = stage_params("s", tmp_path / "params.yaml", tmp_path / "dvc.yaml")
    assert params.seed == 42 and params.train.epochs == 5 and params.train.learning_rate == 2e-5
    with pytest.raises(ParamsError, match=r"stage 's' reads params key 'evaluate'.*add '- evaluate'"):
        _ = params.evaluate.batch_size


def test_stage_view_allows_listed_leaves_only(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "x", "params": ["data.source"]}}}))
    params = stage_params("s", tmp_path / "params.yaml", tmp_path / "dvc.yaml")
    assert params.data.source == "rotten_tomatoes"
    with pytest.raises(ParamsError, match=r"data\.encoding"):
        _ = params.data.encoding
    with pytest.raises(ParamsError, match="no stage named"):
        stage_params("other", tmp_path / "params.yaml", tmp_path / "dvc.yaml")


def test_relative_paths_inside_a_queued_experiment_copy_resolve_against_the_workspace(tmp_path, monkeypatch):
    from finetune.params import local_path, missing_path_hint, workspace_root

    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    (repo / "data").mkdir()
    (repo / "data" / "mine.csv").write_text("text,label\n")  # git-ignored: not in the copy
    (tmp_path / "outside.csv").write_text("text,label\n")
    assert workspace_root(copy) == repo and workspace_root(repo) is None
    monkeypatch.chdir(copy)
    assert local_path("data/mine.csv") == repo / "data" / "mine.csv"
    assert local_path("../outside.csv") == repo / "../outside.csv" and local_path("../outside.csv").exists()
    assert not local_path("data/missing.csv").exists()
    assert "give paths outside the repository as absolute paths" in missing_path_hint()
    monkeypatch.chdir(repo)
    assert local_path("data/mine.csv") == Path("data/mine.csv") and missing_path_hint() == ""


def test_a_missing_source_in_a_queued_experiment_says_to_use_an_absolute_path(tmp_path, monkeypatch):
    from finetune.params import DataParams
    from finetune.sources import DataSourceError, read_source

    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    with pytest.raises(DataSourceError, match=r"queued experiment.*absolute paths"):
        read_source(DataParams(source="../nowhere/reviews.csv"))
