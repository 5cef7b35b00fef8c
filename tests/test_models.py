"""Loading and saving models: the classification head found by name, tokenizer bytes independent of the load."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from finetune.core.hub import OFFLINE_VARIABLES
from finetune.evaluation.calibration import fold_temperature
from finetune.training.models import classification_head
from tests.conftest import ROOT, offline_env


def tiny_config(cls_name: str, num_labels: int = 3):
    import transformers

    config_cls = getattr(transformers, cls_name.replace("ForSequenceClassification", "Config"))
    sizes = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "vocab_size": 100, "max_position_embeddings": 64}
    if cls_name.startswith("DistilBert"):
        sizes = {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64, "vocab_size": 100,
                 "max_position_embeddings": 64}
    if cls_name.startswith("GPT2"):
        sizes = {"n_embd": 32, "n_layer": 1, "n_head": 2, "vocab_size": 100, "n_positions": 64, "pad_token_id": 0}
    return getattr(transformers, cls_name)(config_cls(num_labels=num_labels, **sizes))


@pytest.mark.parametrize(("architecture", "head"), [
    ("BertForSequenceClassification", "classifier"),
    ("DistilBertForSequenceClassification", "classifier"),  # a pre_classifier of the same width comes first
    ("RobertaForSequenceClassification", "classifier.out_proj"),
    ("GPT2ForSequenceClassification", "score"),
])
def test_the_temperature_folds_into_the_head_found_by_name(architecture, head):
    model = tiny_config(architecture, num_labels=32 if architecture.startswith("DistilBert") else 3).eval()
    assert classification_head(model) is model.get_submodule(head)
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        fold_temperature(model, 2.0)
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before / 2.0, rtol=1e-5, atol=1e-6)


def test_a_model_without_a_known_head_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    model.config = type("Config", (), {"num_labels": 2})()
    with pytest.raises(ValueError, match="no classification head named classifier"):
        classification_head(model)


SAVE = """
import sys
from finetune.training.models import load_tokenizer, resolve_model, save_tokenizer
save_tokenizer(load_tokenizer(resolve_model("minilm")), sys.argv[1])
"""


def test_the_saved_tokenizer_does_not_depend_on_the_offline_variables(tmp_path):
    """HF_HUB_OFFLINE=1 made transformers write "local_files_only": true into tokenizer_config.json."""
    env = offline_env()
    online = {k: v for k, v in env.items() if k not in OFFLINE_VARIABLES}
    for name, environment in {"offline": env, "online": online}.items():
        subprocess.run([sys.executable, "-c", SAVE, str(tmp_path / name)], cwd=ROOT, env=environment, check=True)
    files = sorted(p.name for p in (tmp_path / "offline").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "online").iterdir()) and "tokenizer_config.json" in files
    for name in files:
        assert (tmp_path / "offline" / name).read_bytes() == (tmp_path / "online" / name).read_bytes(), name
    assert b"local_files_only" not in (tmp_path / "offline" / "tokenizer_config.json").read_bytes()




def test_a_new_head_is_one_readable_line_and_a_missing_encoder_weight_warns(tmp_path, caplog, capfd):
    """transformers' load report (a table with terminal colour codes, "MISSING" for the expected new head) gives
    way to one line: INFO for the head, WARNING for any other weight that starts random."""
    import logging

    from transformers import BertConfig, BertModel

    from finetune.training.models import load_classifier

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path / "encoder", safe_serialization=True)  # no classification head
    with caplog.at_level(logging.INFO, logger="finetune"):
        load_classifier(str(tmp_path / "encoder"), ["a", "b"])
    assert "a new classification head starts from random weights (classifier.bias, classifier.weight)" in caplog.text
    assert "WARNING" not in caplog.text and "MISSING" not in capfd.readouterr().err
    encoder = BertModel(config)
    state = {k: v for k, v in encoder.state_dict().items() if "layer.0.output.dense" not in k}
    encoder.save_pretrained(tmp_path / "partial", state_dict=state, safe_serialization=True)
    caplog.clear()
    load_classifier(str(tmp_path / "partial"), ["a", "b"])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and warned[0].startswith("2 weights of the model were not in")
    assert "encoder.layer.0.output.dense.bias" in warned[0]
