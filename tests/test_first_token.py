"""The export's last layer for the first token alone: the same logits as the whole model, on tiny random models."""

import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from finetune.export.first_token import first_token_only

SIZES = {"vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64, "max_position_embeddings": 64, "num_labels": 3}


def tiny(kind: str, attention: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "bert":
        model = BertForSequenceClassification(BertConfig(**SIZES, attn_implementation=attention))
    elif kind == "roberta":
        model = RobertaForSequenceClassification(RobertaConfig(**SIZES, pad_token_id=1,
                                                               attn_implementation=attention))
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, num_labels=3,
            attn_implementation=attention))
    return model.eval()


def padded_batch() -> dict[str, torch.Tensor]:
    """Three rows of 3, 9 and 12 tokens, padded to 12 (ids from 2 up: RoBERTa's padding id is 1)."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 120, (3, 12), generator=generator)
    mask = torch.zeros_like(ids)
    for row, length in enumerate((3, 9, 12)):
        mask[row, :length] = 1
    return {"input_ids": torch.where(mask == 1, ids, torch.ones_like(ids)), "attention_mask": mask}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_first_token_layer_gives_the_whole_models_logits(kind, attention):
    model, batch = tiny(kind, attention), padded_batch()
    with torch.no_grad():
        whole = model(**batch).logits
        assert first_token_only(model)
        cut = model(**batch, output_hidden_states=True)
    assert cut.hidden_states[-1].shape[1] == 1  # the last layer computed the first token's row alone
    assert torch.allclose(cut.logits, whole, atol=1e-6), (cut.logits - whole).abs().max()
    with torch.no_grad():  # one row given without an attention mask
        assert torch.allclose(model(input_ids=batch["input_ids"][2:]).logits, whole[2:], atol=1e-6)


def test_another_architecture_stays_whole():
    model = AlbertForSequenceClassification(AlbertConfig(vocab_size=120, embedding_size=16, hidden_size=32,
                                                         num_hidden_layers=1, num_attention_heads=4,
                                                         intermediate_size=64, num_labels=2))
    before = [type(m) for m in model.modules()]
    assert not first_token_only(model)
    assert [type(m) for m in model.modules()] == before
