"""The encoder's last layer computed for the first token alone, for the exported model.

A sequence classifier of the BERT, RoBERTa and DistilBERT families reads one hidden state of the last layer: the
first token's ([CLS] or <s>). The rest of that layer's output (every other token's query, attention output and
feed-forward) is computed and thrown away. The export replaces that layer by one that computes the first token's
row alone, with keys and values from every token as before: the same logits for less of the work. The export's
parity check compares the result against the whole PyTorch model. Other architectures are exported whole.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def split_heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, hidden) -> (batch, heads, tokens, hidden / heads)."""
    batch, tokens, hidden = states.shape
    return states.view(batch, tokens, heads, hidden // heads).transpose(1, 2)


def first_token_attention(query: nn.Linear, key: nn.Linear, value: nn.Linear, heads: int, scale: float,
                          states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Multi-head attention of the first token over every token: (batch, 1, hidden).

    ``mask`` is what the model hands its layers: None (no padding), or a 4-D mask (batch, 1, queries, tokens),
    boolean or additive, whose first query row is the first token's."""
    if mask is not None and mask.dim() != 4:
        raise TypeError(f"expected a 4-D attention mask, got shape {tuple(mask.shape)}")
    first = states[:, :1]
    context = F.scaled_dot_product_attention(
        split_heads(query(first), heads), split_heads(key(states), heads), split_heads(value(states), heads),
        attn_mask=None if mask is None else mask[:, :, :1, :], scale=scale)
    return context.transpose(1, 2).reshape(first.shape)


class BertFirstTokenLayer(nn.Module):
    """A BERT or RoBERTa encoder layer that outputs the first token's row only."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args,
                **kwargs) -> torch.Tensor:
        attention = self.layer.attention
        heads = attention.self
        context = first_token_attention(heads.query, heads.key, heads.value, heads.num_attention_heads,
                                        heads.scaling, hidden_states, attention_mask)
        return self.layer.feed_forward_chunk(attention.output(context, hidden_states[:, :1]))


class DistilBertFirstTokenLayer(nn.Module):
    """A DistilBERT transformer block that outputs the first token's row only."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        block, heads = self.layer, self.layer.attention
        context = first_token_attention(heads.q_lin, heads.k_lin, heads.v_lin, heads.n_heads, heads.scaling,
                                        hidden_states, attention_mask)
        attended = block.sa_layer_norm(heads.out_lin(context) + hidden_states[:, :1])
        return block.output_layer_norm(block.ffn(attended) + attended)


# Classifier class -> (its base model's attribute, the layer list's attribute, the replacement layer).
FIRST_TOKEN_CLASSIFIERS: dict[str, tuple[str, str, type[nn.Module]]] = {
    "BertForSequenceClassification": ("bert", "encoder", BertFirstTokenLayer),
    "RobertaForSequenceClassification": ("roberta", "encoder", BertFirstTokenLayer),
    "DistilBertForSequenceClassification": ("distilbert", "transformer", DistilBertFirstTokenLayer),
}


def first_token_only(model: nn.Module) -> bool:
    """Replace ``model``'s last encoder layer (in place) by its first-token version; False for a model of another
    architecture, which stays whole."""
    known = FIRST_TOKEN_CLASSIFIERS.get(type(model).__name__)
    if known is None:
        log.info("%s: the last layer is exported for every token (no first-token version for it)",
                 type(model).__name__)
        return False
    base, stack, replacement = known
    layers = getattr(getattr(model, base), stack).layer
    layers[-1] = replacement(layers[-1])
    return True
