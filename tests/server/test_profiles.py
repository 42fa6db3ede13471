"""The model-family table: detection, vLLM arguments and compatibility checks (pure, milliseconds)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from reranker_server.config import ServerConfig
from reranker_server.profiles import (
    FAMILIES,
    TEMPLATE_DIR,
    IncompatibleConfigError,
    UnsupportedModelError,
    build_vllm_args,
    check_compatibility,
    detect_family,
    family_names,
)

BERT_CE = {
    "architectures": ["BertForSequenceClassification"],
    "model_type": "bert",
    "num_attention_heads": 12,
    "max_position_embeddings": 512,
    "id2label": {"0": "LABEL_0"},
}
QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "max_position_embeddings": 40960,
}

# (what, config.json, model name, expected family)
DETECTION = [
    ("Qwen3-Reranker original", QWEN3, "Qwen/Qwen3-Reranker-0.6B", "qwen3-reranker"),
    (
        "Qwen3-Reranker seq-cls",
        {"architectures": ["Qwen3ForSequenceClassification"]},
        "tomaarsen/Qwen3-Reranker-0.6B-seq-cls",
        "qwen3-reranker-seq-cls",
    ),
    (
        "bge-reranker-v2-m3",
        {"architectures": ["XLMRobertaForSequenceClassification"], "num_labels": 1},
        "BAAI/bge-reranker-v2-m3",
        "cross-encoder",
    ),
    (
        "jina-reranker-v2",
        {"architectures": ["XLMRobertaForSequenceClassification"]},
        "jinaai/jina-reranker-v2-base-multilingual",
        "cross-encoder",
    ),
    (
        "gte-reranker-modernbert",
        {"architectures": ["ModernBertForSequenceClassification"]},
        "Alibaba-NLP/gte-reranker-modernbert-base",
        "cross-encoder",
    ),
    (
        "gte-multilingual-reranker",
        {"architectures": ["NewForSequenceClassification"]},
        "Alibaba-NLP/gte-multilingual-reranker-base",
        "cross-encoder",
    ),
    ("ms-marco MiniLM", BERT_CE, "cross-encoder/ms-marco-MiniLM-L6-v2", "cross-encoder"),
    (
        "bge-reranker-v2-gemma",
        {"architectures": ["GemmaForCausalLM"]},
        "BAAI/bge-reranker-v2-gemma",
        "bge-reranker-gemma",
    ),
    (
        "mxbai-rerank-base-v2",
        {"architectures": ["Qwen2ForCausalLM"]},
        "mixedbread-ai/mxbai-rerank-base-v2",
        "mxbai-rerank-v2",
    ),
    (
        "all-MiniLM bi-encoder",
        {"architectures": ["BertModel"]},
        "sentence-transformers/all-MiniLM-L6-v2",
        "bi-encoder",
    ),
    ("bge-m3 bi-encoder", {"architectures": ["XLMRobertaModel"]}, "BAAI/bge-m3", "bi-encoder"),
    ("Qwen3-Embedding bi-encoder", QWEN3, "Qwen/Qwen3-Embedding-0.6B", "bi-encoder"),
    ("local path named like a reranker", QWEN3, "/models/tiny-qwen3-reranker", "qwen3-reranker"),
]


@pytest.mark.parametrize(("what", "config", "name", "family"), DETECTION, ids=[d[0] for d in DETECTION])
def test_detect_family(what, config, name, family):
    assert detect_family(config, name) == family


NOT_RERANKERS = [
    ("GPT-2 LM", {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, "gpt2"),
    ("Qwen3 chat LLM", QWEN3, "Qwen/Qwen3-0.6B"),
    ("Llama", {"architectures": ["LlamaForCausalLM"]}, "meta-llama/Llama-3.2-1B"),
    ("no architectures", {}, "some/model"),
]


@pytest.mark.parametrize(("what", "config", "name"), NOT_RERANKERS, ids=[n[0] for n in NOT_RERANKERS])
def test_non_rerankers_are_refused_with_a_clear_message(what, config, name):
    with pytest.raises(UnsupportedModelError) as err:
        detect_family(config, name)
    message = str(err.value)
    assert f"{name} is not a reranker" in message
    assert str(config.get("architectures", [])) in message
    assert "qwen3-reranker" in message and "cross-encoder" in message  # lists what is supported


def test_family_names_lists_auto_and_every_family():
    names = family_names()
    assert names[0] == "auto"
    assert set(names[1:]) == set(FAMILIES)
    assert {
        "qwen3-reranker",
        "qwen3-reranker-seq-cls",
        "cross-encoder",
        "bge-reranker-gemma",
        "mxbai-rerank-v2",
        "bi-encoder",
    } <= set(names)


def test_profiles_import_without_vllm_or_torch():
    code = "import sys, reranker_server.profiles; print(sorted(m for m in ('torch', 'vllm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def cfg(name="m", family="auto", **extra) -> ServerConfig:
    model = {"name": name, "served_name": "served", "family": family}
    model.update(
        {k: v for k, v in extra.items() if k in {"max_model_len", "instruction", "trust_remote_code"}}
    )
    engine = {k: v for k, v in extra.items() if k not in model and k not in {"max_model_len", "instruction"}}
    return ServerConfig.model_validate({"model": model, "engine": engine})


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_qwen3_reranker_args():
    args = build_vllm_args(cfg("Qwen/Qwen3-Reranker-4B", max_model_len=8192), QWEN3, model_path="/cache/q")
    assert _flag(args, "--model") == "/cache/q"
    assert _flag(args, "--served-model-name") == "served"
    assert _flag(args, "--runner") == "pooling"
    assert json.loads(_flag(args, "--hf-overrides")) == {
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
        "is_original_qwen3_reranker": True,
    }
    assert _flag(args, "--chat-template") == str(TEMPLATE_DIR / "qwen3_reranker.jinja")
    assert _flag(args, "--max-model-len") == "8192"
    assert "--api-key" not in args


@pytest.mark.parametrize(
    ("name", "config", "overrides", "template"),
    [
        (
            "BAAI/bge-reranker-v2-gemma",
            {"architectures": ["GemmaForCausalLM"]},
            {
                "architectures": ["GemmaForSequenceClassification"],
                "classifier_from_token": ["Yes"],
                "method": "no_post_processing",
            },
            "bge_reranker_v2_gemma.jinja",
        ),
        (
            "mixedbread-ai/mxbai-rerank-large-v2",
            {"architectures": ["Qwen2ForCausalLM"]},
            {
                "architectures": ["Qwen2ForSequenceClassification"],
                "classifier_from_token": ["0", "1"],
                "method": "from_2_way_softmax",
            },
            "mxbai_rerank_v2.jinja",
        ),
        (
            "tomaarsen/Qwen3-Reranker-4B-seq-cls",
            {"architectures": ["Qwen3ForSequenceClassification"]},
            None,
            "qwen3_reranker.jinja",
        ),
        (
            "BAAI/bge-reranker-v2-m3",
            {"architectures": ["XLMRobertaForSequenceClassification"], "num_labels": 1},
            None,
            None,
        ),
    ],
)
def test_template_and_override_args_per_family(name, config, overrides, template):
    args = build_vllm_args(cfg(name), config)
    raw = _flag(args, "--hf-overrides")
    assert (json.loads(raw) if raw else None) == overrides
    assert _flag(args, "--chat-template") == (str(TEMPLATE_DIR / template) if template else None)
    if template:
        assert (TEMPLATE_DIR / template).is_file()


def test_gte_multilingual_gets_vllm_class_and_remote_code():
    args = build_vllm_args(
        cfg("Alibaba-NLP/gte-multilingual-reranker-base"),
        {"architectures": ["NewForSequenceClassification"], "num_labels": 1},
    )
    assert json.loads(_flag(args, "--hf-overrides")) == {"architectures": ["GteNewForSequenceClassification"]}
    assert "--trust-remote-code" in args


def test_bi_encoder_args_convert_to_embed():
    args = build_vllm_args(cfg("BAAI/bge-m3"), {"architectures": ["XLMRobertaModel"]})
    assert _flag(args, "--convert") == "embed"
    assert "--hf-overrides" not in args and "--chat-template" not in args


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # ms-marco MiniLM declares Identity: vLLM would return raw logits even with use_activation true.
        (
            {
                **BERT_CE,
                "sentence_transformers": {
                    "activation_fn": "torch.nn.modules.linear.Identity",
                    "version": "4",
                },
            },
            {
                "sentence_transformers": {
                    "activation_fn": "torch.nn.modules.activation.Sigmoid",
                    "version": "4",
                }
            },
        ),
        (
            {**BERT_CE, "sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity"},
            {"sbert_ce_default_activation_function": "torch.nn.modules.activation.Sigmoid"},
        ),
        # Already Sigmoid (bge-reranker) or nothing declared (vLLM's default is Sigmoid): no override.
        (
            {**BERT_CE, "sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Sigmoid"}},
            None,
        ),
        (BERT_CE, None),
    ],
)
def test_cross_encoder_scores_are_forced_into_0_1(config, expected):
    raw = _flag(build_vllm_args(cfg("cross-encoder/ms-marco-MiniLM-L6-v2"), config), "--hf-overrides")
    assert (json.loads(raw) if raw else None) == expected


def test_engine_knobs_pass_through():
    c = cfg(
        "BAAI/bge-reranker-v2-m3",
        tensor_parallel_size=2,
        dtype="float32",
        gpu_memory_utilization=0.5,
        max_num_seqs=64,
        max_num_batched_tokens=4096,
        enforce_eager=True,
        extra_args=["--seed", "7"],
    )
    args = build_vllm_args(c, {**BERT_CE, "num_attention_heads": 16})
    assert _flag(args, "--tensor-parallel-size") == "2"
    assert _flag(args, "--dtype") == "float32"
    assert _flag(args, "--gpu-memory-utilization") == "0.5"
    assert _flag(args, "--max-num-seqs") == "64"
    assert _flag(args, "--max-num-batched-tokens") == "4096"
    assert "--enforce-eager" in args
    assert args[-2:] == ["--seed", "7"]


# (what, server config, model config.json, words the error must contain)
INCOMPATIBLE = [
    (
        "TP does not divide heads",
        cfg("x/bge-reranker", tensor_parallel_size=4),
        {**BERT_CE, "num_attention_heads": 2},
        ["tensor_parallel_size 4", "2 attention heads"],
    ),
    (
        "TP vs GQA kv heads",
        cfg("Qwen/Qwen3-Reranker-8B", tensor_parallel_size=4),
        {**QWEN3, "num_attention_heads": 32, "num_key_value_heads": 6},
        ["tensor_parallel_size 4", "6 key/value heads"],
    ),
    (
        "max_model_len above positions",
        cfg("x/ce", max_model_len=1024),
        BERT_CE,
        ["max_model_len 1024", "512 positions"],
    ),
    (
        "RoBERTa reserves two positions",
        cfg("BAAI/bge-reranker-v2-m3", max_model_len=8194),
        {
            "architectures": ["XLMRobertaForSequenceClassification"],
            "model_type": "xlm-roberta",
            "num_labels": 1,
            "max_position_embeddings": 8194,
        },
        ["max_model_len 8194", "8192 positions"],
    ),
    (
        "instruction on a cross-encoder",
        cfg("x/ce", instruction="be nice"),
        BERT_CE,
        ["instruction", "cross-encoder"],
    ),
    (
        "family forced onto the wrong model",
        cfg("x/y", family="qwen3-reranker"),
        BERT_CE,
        ["qwen3-reranker", "BertForSequenceClassification"],
    ),
]


@pytest.mark.parametrize(("what", "config", "model", "words"), INCOMPATIBLE, ids=[i[0] for i in INCOMPATIBLE])
def test_incompatible_configs_fail_before_vllm(what, config, model, words):
    with pytest.raises(IncompatibleConfigError) as err:
        check_compatibility(config, model)
    for word in words:
        assert word in str(err.value)


def test_tp_accepted_when_heads_divide():
    assert (
        check_compatibility(cfg("Qwen/Qwen3-Reranker-8B", tensor_parallel_size=2), QWEN3).name
        == "qwen3-reranker"
    )


def test_multi_label_classifier_is_not_a_reranker():
    config = {**BERT_CE, "id2label": {"0": "NEG", "1": "POS"}}
    with pytest.raises(UnsupportedModelError, match="2-label classifier"):
        check_compatibility(cfg("nlptown/sentiment"), config)


def test_template_family_without_its_template_file(tmp_path):
    with pytest.raises(IncompatibleConfigError, match="qwen3_reranker.jinja"):
        check_compatibility(cfg("Qwen/Qwen3-Reranker-0.6B"), QWEN3, template_dir=tmp_path)


def test_unknown_family_name():
    with pytest.raises(UnsupportedModelError, match="unknown model family 'colbert'"):
        check_compatibility(cfg("x", family="colbert"), BERT_CE)


def test_only_bi_encoders_map_cosine_onto_the_unit_interval():
    from reranker_server.scoring import cosine_to_unit

    assert [name for name, f in FAMILIES.items() if f.cosine_scores] == ["bi-encoder"]
    assert [cosine_to_unit(c) for c in (-1.0, -0.2, 0.0, 0.6, 1.0, 1.0000001)] == pytest.approx(
        [0.0, 0.4, 0.5, 0.8, 1.0, 1.0]
    )
