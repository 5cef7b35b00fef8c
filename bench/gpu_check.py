"""GPU check: how close training at DistilBERT's size comes to the GPU's own bf16 matrix-product rate, and what
LoRA saves on a decoder-sized classifier.

Self-contained: needs only torch, transformers and peft (no project code, no network, no
weights: random initialisation is enough for speed). Measures first the GPU's bf16
matmul rate, then training throughput (forward, backward, fused AdamW step) of
DistilBERT-base's architecture at 128 and 512 tokens, fp32 against bf16 autocast,
and reports samples/s and the share of the measured bf16 rate achieved (model FLOPs:
6 x parameters x tokens plus attention). Then a decoder classifier of Qwen2-0.5B's
architecture at 256 tokens in bf16 autocast: every weight trained against LoRA
adapters (rank 16 on the attention's projections, the head in full), and LoRA with
gradient checkpointing: samples/s, peak memory and trained parameters. Last, the
DistilBERT rows again under ``torch.compile``.
Stops starting new configurations when its time budget runs out and says so.

    python bench/gpu_check.py [--budget 330] [--out gpu_check.json]
    python bench/gpu_check.py --smoke   # a tiny CPU run that checks the script itself
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass

import torch

TOKENS_PER_STEP = 16384  # batch x length is kept constant: 128 x 128 and 32 x 512


DECODER = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
           "num_key_value_heads": 2, "vocab_size": 151936}  # Qwen2-0.5B's architecture
DECODER_SMOKE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "vocab_size": 2000}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass
class Row:
    length: int
    batch: int
    precision: str
    compiled: bool
    samples_per_s: float | None = None
    tflops: float | None = None
    share_of_bf16_rate: float | None = None
    peak_memory_gb: float | None = None
    compile_s: float | None = None
    model: str = "distilbert"
    training: str = "full"  # full | lora | lora+checkpointing
    trained_parameters: int | None = None
    note: str = ""


def significant(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: str, size: int, dtype: torch.dtype, iterations: int) -> float:
    """Measured dense matrix-product rate in TFLOP/s."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        a @ b
    synchronize(device)
    return 2 * size**3 * iterations / (time.perf_counter() - start) / 1e12


def build_model(row: Row, config_kwargs: dict, device: str):
    from transformers import AutoModelForSequenceClassification, DistilBertConfig, Qwen2Config

    if row.model == "distilbert":
        config = DistilBertConfig(num_labels=2, **config_kwargs)
    else:
        config = Qwen2Config(num_labels=2, pad_token_id=0, **config_kwargs)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    if row.training != "full":
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=16, lora_alpha=32,
                                                 target_modules=LORA_TARGETS, modules_to_save=["score"]))
    if row.training == "lora+checkpointing":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.to(device).train()


def training_flops_per_step(model, length: int, batch: int) -> float:
    """6 x non-embedding parameters x tokens, plus attention scores and values (forward and backward)."""
    embedding = sum(p.numel() for name, p in model.named_parameters() if "embeddings" in name)
    params = sum(p.numel() for p in model.parameters()) - embedding
    config = model.config
    tokens = batch * length
    return 6 * params * tokens + 12 * config.n_layers * config.dim * length * tokens


def measure(row: Row, config_kwargs: dict, device: str, steps: int, warmup: int, bf16_rate: float) -> Row:
    torch.manual_seed(0)
    model = build_model(row, config_kwargs, device)
    trained = [p for p in model.parameters() if p.requires_grad]
    row.trained_parameters = sum(p.numel() for p in trained)
    optimizer = torch.optim.AdamW(trained, lr=2e-5, weight_decay=0.01, fused=device == "cuda")
    ids = torch.randint(1000, model.config.vocab_size, (row.batch, row.length), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (row.batch,), device=device)
    forward = torch.compile(model) if row.compiled else model
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=row.precision == "bf16")

    def step() -> None:
        with autocast:
            loss = forward(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(warmup):  # compiles here when compiled
        step()
    synchronize(device)
    if row.compiled:
        row.compile_s = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - start
    row.samples_per_s = round(steps * row.batch / seconds, 1)
    if row.model == "distilbert":  # the FLOP count is DistilBERT's
        tflops = training_flops_per_step(model, row.length, row.batch) * steps / seconds / 1e12
        row.tflops, row.share_of_bf16_rate = significant(tflops), significant(tflops / bf16_rate)
    if device == "cuda":
        row.peak_memory_gb = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def run(smoke: bool, budget: float) -> dict:
    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32; bf16 rows use autocast
        torch.backends.cudnn.allow_tf32 = False
    import transformers

    info = {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__}
    if smoke:
        bf16_rate = matmul_rate(device, 256, torch.bfloat16, 2)
        config_kwargs, decoder, lengths, steps, warmup, compiles = {"dim": 64, "hidden_dim": 128, "n_layers": 2,
                                                                    "n_heads": 2}, DECODER_SMOKE, [32], 2, 1, [False]
    else:
        bf16_rate = matmul_rate(device, 8192, torch.bfloat16, 50)
        config_kwargs, decoder, lengths, steps, warmup, compiles = {}, DECODER, [128, 512], 30, 5, [False, True]
    info["bf16_matmul_tflops"] = significant(bf16_rate)
    print(f"{info}", flush=True)
    plan = []  # eager first: those figures come even when compiling runs out of time
    for length in lengths:
        plan += [(Row(length, max(1, (TOKENS_PER_STEP if not smoke else 128) // length), precision, False),
                  config_kwargs) for precision in ["fp32", "bf16"]]
    decoder_length = 256 if not smoke else 32
    plan += [(Row(decoder_length, 16 if not smoke else 4, "bf16", False, model="qwen2-0.5b" if not smoke else
                  "qwen2-tiny", training=training), decoder) for training in ["full", "lora", "lora+checkpointing"]]
    for compiled in compiles[1:]:
        plan += [(Row(row.length, row.batch, row.precision, compiled), kwargs) for row, kwargs in plan
                 if row.model == "distilbert"]
    rows = []
    for row, kwargs in plan:
        if time.perf_counter() - started > budget:
            row.note = "skipped: time budget spent"
        else:
            try:
                row = measure(row, kwargs, device, steps, warmup, bf16_rate)
            except Exception as err:  # one failed configuration must not hide the others
                row.note = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
            if device == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(asdict(row)), flush=True)
    info["seconds"] = round(time.perf_counter() - started, 1)
    return {"info": info, "rows": [asdict(r) for r in rows]}


def table(result: dict) -> str:
    info = result["info"]
    lines = [f"{info['device']}, torch {info['torch']}, transformers {info['transformers']}: "
             f"measured bf16 matmul rate {info['bf16_matmul_tflops']} TFLOP/s", "",
             "| model | training | trained params | tokens | batch | precision | compile | samples/s | TFLOP/s | "
             "share of bf16 rate | peak GB | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        share = f"{r['share_of_bf16_rate']:.1%}" if r["share_of_bf16_rate"] is not None else ""
        compiled = f"yes ({r['compile_s']} s)" if r["compiled"] and r["compile_s"] else "yes" if r["compiled"] else "no"
        trained = f"{r['trained_parameters']:,}" if r["trained_parameters"] else ""
        lines.append(f"| {r['model']} | {r['training']} | {trained} | {r['length']} | {r['batch']} | "
                     f"{r['precision']} | {compiled} | {r['samples_per_s'] or ''} | "
                     f"{r['tflops'] or ''} | {share} | {r['peak_memory_gb'] or ''} | {r['note']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=330, help="seconds after which no new configuration starts")
    parser.add_argument("--out", default=None, help="where to write the JSON result")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script runs")
    args = parser.parse_args()
    result = run(args.smoke, args.budget)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)
    print(table(result))


if __name__ == "__main__":
    main()
