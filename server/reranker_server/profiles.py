"""The model-family table: the one place that knows vLLM flags, model families and prompt templates.

A family is one `Family` entry in `FAMILIES`. Adding a family means adding one entry (and, for template
models, one file under `templates/`); nothing else in the project knows vLLM flags.

This module must stay importable without vLLM or torch: the operator imports `family_names()` to refuse
unknown families in a RerankerDeployment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import ServerConfig

AUTO = "auto"
# vLLM reads the cross-encoder activation from here first (then `sbert_ce_default_activation_function`).
_SIGMOID = "torch.nn.modules.activation.Sigmoid"
_IDENTITY = "torch.nn.modules.linear.Identity"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
TEMPLATE_DIR = Path(__file__).parent / "templates"

# How long inputs are cut so that a request never fails on length:
#   pair   - the tokenizer truncates the (query, document) pair to max_model_len (encoders, special tokens kept);
#   budget - query and document texts are cut to token budgets BEFORE the template is applied, so the
#            template's suffix (which LAST-token pooling reads) always survives;
#   each   - bi-encoders embed query and document separately; each is cut to max_model_len.
Truncation = Literal["pair", "budget", "each"]


class UnsupportedModelError(ValueError):
    """The model is not something this server can serve as a reranker."""


class IncompatibleConfigError(ValueError):
    """The configuration cannot work with this model (caught before vLLM starts)."""


@dataclass(frozen=True)
class Family:
    """One model family: how to recognise it and how vLLM must run it."""

    name: str
    description: str
    # config.json `architectures` entries that identify the family.
    architectures: tuple[str, ...]
    # Lower-case substrings of the model name; when given, at least one must match (a Qwen3ForCausalLM is an
    # LLM unless its name says it is a reranker).
    name_hints: tuple[str, ...] = ()
    runner: str | None = "pooling"
    convert: str | None = None
    hf_overrides: Mapping[str, Any] = field(default_factory=dict)
    # Per-architecture replacement (e.g. GTE's remote-code class name -> vLLM's class).
    architecture_overrides: Mapping[str, str] = field(default_factory=dict)
    template: str | None = None
    template_required: bool = False
    truncation: Truncation = "pair"
    supports_instruction: bool = False
    # Only cross-encoders with a single logit are rerankers; decoders get their 1-logit head from the overrides.
    requires_single_label: bool = False
    # Some checkpoints need their remote code for the config to load.
    trust_remote_code_architectures: tuple[str, ...] = ()
    # Bi-encoders answer a cosine in [-1, 1]; clients (RAGFlow) expect [0, 1], so it is mapped to (1 + cos) / 2
    # unless the request asks for raw scores.
    cosine_scores: bool = False

    @property
    def uses_template(self) -> bool:
        """Whether the prompt is built by a chat template (and so LAST-token pooling reads its suffix)."""
        return self.template is not None


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="qwen3-reranker",
            description="Qwen/Qwen3-Reranker-0.6B/4B/8B (original checkpoints, yes/no logits as a score head)",
            architectures=("Qwen3ForCausalLM",),
            name_hints=("rerank",),
            hf_overrides={
                "architectures": ["Qwen3ForSequenceClassification"],
                "classifier_from_token": ["no", "yes"],
                "is_original_qwen3_reranker": True,
            },
            template="qwen3_reranker.jinja",
            template_required=True,
            truncation="budget",
            supports_instruction=True,
        ),
        Family(
            name="qwen3-reranker-seq-cls",
            description="Qwen3-Reranker checkpoints converted to a sequence classifier (e.g. tomaarsen/*-seq-cls)",
            architectures=("Qwen3ForSequenceClassification",),
            template="qwen3_reranker.jinja",
            template_required=True,
            truncation="budget",
            supports_instruction=True,
        ),
        Family(
            name="cross-encoder",
            description="encoder cross-encoders with one logit: bge-reranker-v2-m3/base/large, jina-reranker-v2, "
            "gte-reranker-modernbert, ms-marco MiniLM, gte-multilingual-reranker",
            architectures=(
                "BertForSequenceClassification",
                "XLMRobertaForSequenceClassification",
                "RobertaForSequenceClassification",
                "ModernBertForSequenceClassification",
                "NewForSequenceClassification",
                "GteNewForSequenceClassification",
            ),
            architecture_overrides={"NewForSequenceClassification": "GteNewForSequenceClassification"},
            trust_remote_code_architectures=(
                "NewForSequenceClassification",
                "GteNewForSequenceClassification",
            ),
            requires_single_label=True,
            truncation="pair",
        ),
        Family(
            name="bge-reranker-gemma",
            description="BAAI/bge-reranker-v2-gemma (the 'Yes' logit of a Gemma decoder)",
            architectures=("GemmaForCausalLM",),
            name_hints=("rerank",),
            hf_overrides={
                "architectures": ["GemmaForSequenceClassification"],
                "classifier_from_token": ["Yes"],
                "method": "no_post_processing",
            },
            template="bge_reranker_v2_gemma.jinja",
            template_required=True,
            truncation="budget",
        ),
        Family(
            name="mxbai-rerank-v2",
            description="mixedbread-ai/mxbai-rerank-base-v2 / large-v2 (Qwen2 decoder, '0'/'1' logits)",
            architectures=("Qwen2ForCausalLM",),
            name_hints=("mxbai-rerank", "rerank"),
            hf_overrides={
                "architectures": ["Qwen2ForSequenceClassification"],
                "classifier_from_token": ["0", "1"],
                "method": "from_2_way_softmax",
            },
            template="mxbai_rerank_v2.jinja",
            template_required=True,
            truncation="budget",
        ),
        Family(
            name="bi-encoder",
            description="embedding models scored by cosine similarity (all-MiniLM, bge-m3, e5, gte, ...)",
            architectures=(
                "BertModel",
                "XLMRobertaModel",
                "RobertaModel",
                "ModernBertModel",
                "NewModel",
                "MPNetModel",
                "NomicBertModel",
                "GteModel",
            ),
            convert="embed",
            truncation="each",
            cosine_scores=True,
        ),
    )
}


def family_names() -> list[str]:
    """Every value `model.family` may take: "auto" (detect from config.json) first, then the concrete families.

    The operator refuses any other name. "auto" is included because it is the default of `ModelConfig.family`.
    """
    return [AUTO, *FAMILIES]


def get_family(name: str) -> Family:
    """The family called `name` (not "auto"), with a clear error for an unknown name."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnsupportedModelError(
            f"unknown model family {name!r}; supported: {', '.join(family_names())}"
        ) from None


def _architectures(model_config: Mapping[str, Any]) -> list[str]:
    archs = model_config.get("architectures") or []
    return [str(a) for a in archs] if isinstance(archs, list) else [str(archs)]


def detect_family(config_json: Mapping[str, Any], model_name: str) -> str:
    """Name the family of a model from its config.json and its name (hub id or path).

    Raises `UnsupportedModelError` naming the architectures and the supported families when nothing fits.
    """
    archs = _architectures(config_json)
    lowered = model_name.lower()
    for family in FAMILIES.values():
        if not any(a in family.architectures for a in archs):
            continue
        if family.name_hints and not any(h in lowered for h in family.name_hints):
            continue
        return family.name
    # A decoder LLM whose name says "embedding" is a bi-encoder (Qwen3-Embedding, gte-Qwen2, e5-mistral).
    if any(a.endswith("ForCausalLM") for a in archs) and "embed" in lowered:
        return "bi-encoder"
    raise UnsupportedModelError(
        f"{model_name} is not a reranker: architectures {archs}, model_type "
        f"{config_json.get('model_type')!r}; supported families: "
        + "; ".join(f"{f.name} ({', '.join(f.architectures)})" for f in FAMILIES.values())
        + ". Set model.family explicitly if the model is a reranker with an unusual name."
    )


def resolve_family(cfg: ServerConfig, model_config: Mapping[str, Any]) -> Family:
    """The configured family, or the detected one when the configuration says "auto"."""
    name = cfg.model.family
    if name == AUTO:
        name = detect_family(model_config, cfg.model.name)
    return get_family(name)


def num_labels(model_config: Mapping[str, Any]) -> int:
    """How many logits a sequence classifier outputs, as transformers derives it."""
    if "num_labels" in model_config:
        return int(model_config["num_labels"])
    id2label = model_config.get("id2label")
    return len(id2label) if id2label else 2


def activation_overrides(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """hf-overrides that make a cross-encoder return scores in [0, 1] by default.

    Some checkpoints (ms-marco MiniLM) declare an Identity activation, so vLLM would return raw logits even
    with `use_activation: true`. We force Sigmoid; clients wanting raw logits send `use_activation: false`.
    """
    st = model_config.get("sentence_transformers")
    if isinstance(st, Mapping) and st.get("activation_fn") == _IDENTITY:
        # vLLM reads `sentence_transformers.activation_fn` first, so that dict must be replaced as a whole.
        return {"sentence_transformers": {**st, "activation_fn": _SIGMOID}}
    if model_config.get("sbert_ce_default_activation_function") == _IDENTITY:
        return {"sbert_ce_default_activation_function": _SIGMOID}
    if model_config.get("problem_type") == "regression":
        return {"problem_type": None, "sbert_ce_default_activation_function": _SIGMOID}
    return {}


def _text_config(model_config: Mapping[str, Any]) -> Mapping[str, Any]:
    # Multimodal configs nest the language model's numbers.
    text = model_config.get("text_config")
    return text if isinstance(text, Mapping) else model_config


def check_compatibility(
    cfg: ServerConfig, model_config: Mapping[str, Any], template_dir: Path = TEMPLATE_DIR
) -> Family:
    """Refuse a configuration that cannot work, with a message a person can act on, before vLLM starts.

    Returns the resolved family. Raises `UnsupportedModelError` or `IncompatibleConfigError`.
    """
    family = resolve_family(cfg, model_config)
    archs = _architectures(model_config)
    if cfg.model.family != AUTO and not any(a in family.architectures for a in archs):
        raise IncompatibleConfigError(
            f"model.family is {family.name!r} but {cfg.model.name} has architectures {archs}; "
            f"{family.name} expects one of {list(family.architectures)}"
        )
    if family.requires_single_label and num_labels(model_config) != 1:
        raise UnsupportedModelError(
            f"{cfg.model.name} is not a reranker: it is a {num_labels(model_config)}-label classifier "
            f"(architectures {archs}); a cross-encoder reranker has exactly one output logit"
        )
    text = _text_config(model_config)
    tp = cfg.engine.tensor_parallel_size
    heads = text.get("num_attention_heads")
    if heads is not None and heads % tp:
        raise IncompatibleConfigError(
            f"tensor_parallel_size {tp} does not divide the model's {heads} attention heads; "
            f"use a tensor_parallel_size (gpusPerPod) that divides {heads}"
        )
    kv_heads = text.get("num_key_value_heads")
    if kv_heads is not None and tp > 1 and kv_heads % tp and tp % kv_heads:
        raise IncompatibleConfigError(
            f"tensor_parallel_size {tp} and the model's {kv_heads} key/value heads do not divide each other; "
            f"use a tensor_parallel_size that divides {kv_heads} or is a multiple of it"
        )
    max_pos = text.get("max_position_embeddings")
    max_len = cfg.model.max_model_len
    if max_len is not None and max_pos is not None:
        # RoBERTa-style models reserve two positions for the padding offset.
        usable = max_pos - 2 if text.get("model_type") in {"roberta", "xlm-roberta"} else max_pos
        if max_len > usable:
            raise IncompatibleConfigError(
                f"max_model_len {max_len} is above what {cfg.model.name} supports ({usable} positions); "
                f"lower model.max_model_len to at most {usable}"
            )
    if family.template_required:
        if family.template is None or not (template_dir / family.template).is_file():
            raise IncompatibleConfigError(
                f"family {family.name} needs the prompt template {family.template}, which is missing from "
                f"{template_dir}; without it vLLM concatenates query and document and scores are near random"
            )
    if cfg.model.instruction and not family.supports_instruction:
        raise IncompatibleConfigError(
            f"model.instruction is set but family {family.name} does not take an instruction; remove it"
        )
    return family


def hf_overrides(family: Family, model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The `--hf-overrides` object for this model: the family's own, architecture fixes and activation."""
    overrides: dict[str, Any] = dict(family.hf_overrides)
    for arch in _architectures(model_config):
        if arch in family.architecture_overrides:
            overrides["architectures"] = [family.architecture_overrides[arch]]
    if family.requires_single_label:
        overrides.update(activation_overrides(model_config))
    return overrides


def build_vllm_args(
    cfg: ServerConfig,
    model_config: Mapping[str, Any],
    template_dir: Path = TEMPLATE_DIR,
    *,
    model_path: str | None = None,
) -> list[str]:
    """vLLM's command-line arguments for this configuration and model (everything except the API key).

    `model_path` is where the weights are on disk (defaults to `cfg.model.name`). The API key is never
    passed: our own middleware guards every route.
    """
    family = check_compatibility(cfg, model_config, template_dir)
    eng = cfg.engine
    args = ["--model", model_path or cfg.model.name, "--served-model-name", cfg.model.served_name]
    if family.runner:
        args += ["--runner", family.runner]
    if family.convert:
        args += ["--convert", family.convert]
    overrides = hf_overrides(family, model_config)
    if overrides:
        args += ["--hf-overrides", json.dumps(overrides, sort_keys=True)]
    if family.template:
        args += ["--chat-template", str(template_dir / family.template)]
    archs = _architectures(model_config)
    if cfg.model.trust_remote_code or any(a in family.trust_remote_code_architectures for a in archs):
        args.append("--trust-remote-code")
    if cfg.model.revision and model_path is None:
        args += ["--revision", cfg.model.revision]
    if cfg.model.max_model_len is not None:
        args += ["--max-model-len", str(cfg.model.max_model_len)]
    if eng.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(eng.tensor_parallel_size)]
    args += ["--dtype", eng.dtype]
    if eng.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", str(eng.gpu_memory_utilization)]
    if eng.max_num_seqs is not None:
        args += ["--max-num-seqs", str(eng.max_num_seqs)]
    if eng.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(eng.max_num_batched_tokens)]
    if eng.enforce_eager:
        args.append("--enforce-eager")
    args += ["--host", cfg.host, "--port", str(cfg.port)]
    args += list(eng.extra_args)
    return args
