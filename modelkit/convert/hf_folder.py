"""A Hugging Face model folder: config.json with transformers' class defaults, the other
JSON files, and the safetensors parts.

llama.cpp's converter reads hyper-parameters through ``AutoConfig(...).to_dict()``, so
defaults of the transformers config class appear even when config.json lacks them.
``CONFIG_DEFAULTS`` holds the ones that change the GGUF, per ``model_type``; the
``head_dim`` rule of ``HEAD_DIM_FROM_HIDDEN`` is LlamaConfig's (hidden / heads when
absent). Special-token ids, ``general.*`` metadata and generation_config are read from
the raw files, as the converter does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkit.errors import ConvertError

# model_type -> defaults that transformers' config class injects (only those that
# reach the GGUF).
CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False},
    "mistral": {"vocab_size": 32000, "max_position_embeddings": 4096 * 32,
                "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False},
    "qwen2": {"vocab_size": 151936, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "rope_scaling": None},
    "qwen3": {"vocab_size": 151936, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "rope_scaling": None, "head_dim": 128},
    "qwen2_moe": {"vocab_size": 151936, "max_position_embeddings": 32768,
                  "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None,
                  "num_experts": 60, "num_experts_per_tok": 4,
                  "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632},
    "qwen3_moe": {"vocab_size": 151936, "max_position_embeddings": 32768,
                  "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "rope_scaling": None,
                  "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
                  "head_dim": 128},
    "gemma": {"vocab_size": 256000, "max_position_embeddings": 8192, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "head_dim": 256},
    "gemma2": {"vocab_size": 256000, "max_position_embeddings": 8192, "rms_norm_eps": 1e-6,
               "rope_theta": 10000.0, "head_dim": 256, "attn_logit_softcapping": 50.0,
               "final_logit_softcapping": 30.0, "sliding_window": 4096},
    "gemma3_text": {"vocab_size": 262208, "max_position_embeddings": 131072,
                    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "head_dim": 256,
                    "sliding_window": 4096, "rope_local_base_freq": 10000.0,
                    "final_logit_softcapping": None},
    "phi3": {"vocab_size": 32064, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
             "rope_theta": 10000.0, "partial_rotary_factor": 1.0, "rope_scaling": None,
             "original_max_position_embeddings": 4096},
    "bert": {"vocab_size": 30522, "max_position_embeddings": 512, "layer_norm_eps": 1e-12,
             "type_vocab_size": 2},
}
HEAD_DIM_FROM_HIDDEN = frozenset({"llama"})
# Config classes whose num_key_value_heads defaults to num_attention_heads.
KV_HEADS_DEFAULT = frozenset({"llama", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe",
                              "phi3", "mixtral"})


def read_json(path: Path) -> Any:
    """A JSON file, or None when it does not exist; bad JSON is a ConvertError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"{path}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConvertError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None


def read_json_object(path: Path) -> dict[str, Any] | None:
    value = read_json(path)
    if value is not None and not isinstance(value, dict):
        raise ConvertError(f"{path}: expected a JSON object")
    return value


@dataclass
class HFFolder:
    path: Path
    config: dict[str, Any]  # config.json as written
    hparams: dict[str, Any]  # with class defaults, text_config merged in
    hf_arch: str
    pre: str | None = None  # a tokenizer.ggml.pre chosen by the user over the hash look-up
    _json: dict[str, Any] = field(default_factory=dict)

    def json(self, name: str) -> Any:
        """A JSON file of the folder (cached), None when absent."""
        if name not in self._json:
            self._json[name] = read_json(self.path / name)
        return self._json[name]

    def json_object(self, name: str) -> dict[str, Any] | None:
        value = self.json(name)
        if value is not None and not isinstance(value, dict):
            raise ConvertError(f"{self.path / name}: expected a JSON object")
        return value

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def find(self, *keys: str) -> Any:
        for k in keys:
            if k in self.hparams:
                return self.hparams[k]
        return None

    def require(self, *keys: str) -> Any:
        value = self.find(*keys)
        if value is None:
            raise ConvertError(f"{self.path / 'config.json'}: missing {keys[0]!r}")
        return value


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as AutoConfig.to_dict() would give it for the keys that matter."""
    hp = dict(config)
    model_type = str(hp.get("model_type", ""))
    if isinstance(hp.get("text_config"), dict):
        text = hp["text_config"]
        model_type = str(text.get("model_type", model_type))
        hp = {**hp, **text}
    for key, value in CONFIG_DEFAULTS.get(model_type, {}).items():
        hp.setdefault(key, value)
    if "num_attention_heads" in hp and model_type in KV_HEADS_DEFAULT:
        hp.setdefault("num_key_value_heads", hp["num_attention_heads"])
        if hp.get("num_key_value_heads") is None:
            hp["num_key_value_heads"] = hp["num_attention_heads"]
    if (model_type in HEAD_DIM_FROM_HIDDEN and hp.get("head_dim") is None
            and "hidden_size" in hp and hp.get("num_attention_heads")):
        hp["head_dim"] = hp["hidden_size"] // hp["num_attention_heads"]
    return hp


def open_folder(path: Path) -> HFFolder:
    if not path.is_dir():
        raise ConvertError(f"{path}: not a Hugging Face model folder")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ConvertError(f"{config_path}: missing (a Hugging Face model folder needs "
                           "config.json)")
    config = read_json_object(config_path)
    assert config is not None
    archs = config.get("architectures")
    text = config.get("text_config")
    if isinstance(text, dict) and isinstance(text.get("architectures"), list):
        archs = text["architectures"]
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise ConvertError(f"{config_path}: no 'architectures' list, cannot tell the model "
                           "architecture")
    return HFFolder(path, config, with_defaults(config), archs[0])
