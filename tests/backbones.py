"""Tiny random models of the backbone families users bring, each saved as a local model folder with a tokenizer of
its kind, built offline: encoders share the packaged MiniLM's WordPiece tokenizer (their code reads only token
ids); decoders ship, as Llama's and Qwen's do, without a pad token (and a config without a pad id): Qwen a
byte-level BPE like its own, Llama a word-level one that puts a beginning token before each text."""

from __future__ import annotations

from pathlib import Path

import transformers

from finetune.training.models import resolve_model

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
         "max_position_embeddings": 128}
MINILM_IDS = {"pad_token_id": 0, "bos_token_id": 101, "cls_token_id": 101, "eos_token_id": 102, "sep_token_id": 102}
ENCODERS = {
    "bert": ("BertConfig", SMALL),
    "distilbert": ("DistilBertConfig", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64,
                                        "max_position_embeddings": 128}),
    "roberta": ("RobertaConfig", {**SMALL, "max_position_embeddings": 130, "pad_token_id": 0}),
    "xlm-roberta": ("XLMRobertaConfig", {**SMALL, "max_position_embeddings": 130, "pad_token_id": 0}),
    "deberta-v2": ("DebertaV2Config", {**SMALL, "pad_token_id": 0}),
    "electra": ("ElectraConfig", {**SMALL, "embedding_size": 16}),
    "modernbert": ("ModernBertConfig", {**SMALL, **MINILM_IDS, "global_attn_every_n_layers": 1,
                                        "local_attention": 16}),
}
DECODERS = {"qwen2": ("Qwen2Config", "<|endoftext|>"), "llama": ("LlamaConfig", "</s>")}
FAMILIES = (*ENCODERS, *DECODERS)
WORDS = ["the", "a", "an", "and", "but", "not", "very", "too", "film", "movie", "story", "plot", "acting",
         "actors", "great", "good", "fine", "moving", "funny", "bad", "dull", "boring", "awful", "long", "slow",
         "it", "is", "was", "of", "to", "this", "that"]


def word_level_tokenizer(eos: str):
    """A fast tokenizer over WORDS with a beginning and an end-of-sequence token and no pad token; it puts the
    beginning token before each text, as Llama's does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<unk>": 0, "<s>": 1, eos: 2, **{word: i + 3 for i, word in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token=eos,
                                                unk_token="<unk>")


def byte_level_bpe_tokenizer(eos: str, vocab_size: int = 400):
    """A byte-level BPE tokenizer like Qwen's (its tokenizer class rebuilds one from the vocabulary and merges),
    trained on Rotten Tomatoes reviews, with an end-of-sequence token and no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from finetune.data.sources import read_rotten_tomatoes

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[eos],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(read_rotten_tomatoes()["train"][0]["text"].head(2000).tolist(), trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos)


def make_backbone(family: str, folder: Path, num_labels: int = 2) -> Path:
    """A randomly initialised ``family`` sequence classifier with ``num_labels`` labels, saved as safetensors with
    its tokenizer in ``folder``."""
    transformers.set_seed(0)
    if family in ENCODERS:
        config_name, sizes = ENCODERS[family]
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model("minilm"))
        config = getattr(transformers, config_name)(vocab_size=tokenizer.vocab_size, num_labels=num_labels, **sizes)
    else:
        config_name, eos = DECODERS[family]
        tokenizer = byte_level_bpe_tokenizer(eos) if family == "qwen2" else word_level_tokenizer(eos)
        ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
        config = getattr(transformers, config_name)(vocab_size=len(tokenizer), num_labels=num_labels,
                                                    num_key_value_heads=1, **ids, **SMALL)
        assert config.pad_token_id is None and tokenizer.pad_token is None  # as the real ones ship
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(folder,
                                                                                         safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
