"""A CTranslate2 Whisper model (model.bin) to a transformers checkpoint (safetensors).

No transformers Whisper weights can be fetched where the embedded stack and the tests run, but
the bundled whisper-base CT2 model holds the same OpenAI weights: renaming and un-fusing them
gives a checkpoint that transcribes like faster-whisper does. `python -m functions.belle2.convert
CT2_DIR OUT_DIR` runs it by hand.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

# CTranslate2's DataType enum, in its order (include/ctranslate2/types.h).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BFLOAT16 = 5
TIMESTAMP_TOKENS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]  # <|0.00|> ... <|30.00|>


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CT2 model.bin (format version 6), aliases resolved."""

    def take(f: BinaryIO, fmt: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))

    def name(f: BinaryIO) -> str:
        (length,) = take(f, "H")
        return f.read(length)[:-1].decode()  # the stored length counts a NUL terminator

    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        (version,) = take(f, "I")
        if version < 5:
            raise ValueError(f"{path}: CTranslate2 model format {version} is too old to convert")
        spec, _revision = name(f), take(f, "I")
        if spec != "WhisperSpec":
            raise ValueError(f"{path}: a {spec}, not a Whisper model")
        for _ in range(take(f, "I")[0]):
            key = name(f)
            rank = take(f, "B")[0]
            shape = take(f, f"{rank}I")
            dtype, size = take(f, "B")[0], take(f, "I")[0]
            raw = f.read(size)
            if dtype == _CT2_BFLOAT16:  # numpy has no bfloat16: widen to float32 bit-exactly
                wide = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
                variables[key] = wide.view(np.float32).reshape(shape)
            elif dtype in _CT2_DTYPES:
                variables[key] = np.frombuffer(raw, _CT2_DTYPES[dtype]).reshape(shape)
            else:
                raise ValueError(f"{path}: {key} has CT2 data type {dtype}, which is not supported")
        for _ in range(take(f, "I")[0]):
            alias, target = name(f), name(f)
            variables[alias] = variables[target]
    if any(key.endswith("weight_scale") for key in variables):
        raise ValueError(f"{path}: quantized (int8) models cannot be converted; use a float model")
    return variables


def _linear(out: dict[str, np.ndarray], hf: str, ct2: dict[str, np.ndarray], prefix: str) -> None:
    out[f"{hf}.weight"] = ct2[f"{prefix}/weight"]
    out[f"{hf}.bias"] = ct2[f"{prefix}/bias"]


def _norm(out: dict[str, np.ndarray], hf: str, ct2: dict[str, np.ndarray], prefix: str) -> None:
    out[f"{hf}.weight"] = ct2[f"{prefix}/gamma"]
    out[f"{hf}.bias"] = ct2[f"{prefix}/beta"]


def _layer(out: dict[str, np.ndarray], hf: str, ct2: dict[str, np.ndarray], prefix: str) -> None:
    # Self-attention q/k/v are fused in linear_0; transformers' k_proj has no bias (CT2 stores 0s).
    q, k, v = np.split(ct2[f"{prefix}/self_attention/linear_0/weight"], 3)
    qb, _kb, vb = np.split(ct2[f"{prefix}/self_attention/linear_0/bias"], 3)
    out |= {f"{hf}.self_attn.q_proj.weight": q, f"{hf}.self_attn.q_proj.bias": qb,
            f"{hf}.self_attn.k_proj.weight": k,
            f"{hf}.self_attn.v_proj.weight": v, f"{hf}.self_attn.v_proj.bias": vb}  # fmt: skip
    _linear(out, f"{hf}.self_attn.out_proj", ct2, f"{prefix}/self_attention/linear_1")
    _norm(out, f"{hf}.self_attn_layer_norm", ct2, f"{prefix}/self_attention/layer_norm")
    if f"{prefix}/attention/linear_0/weight" in ct2:  # decoder: cross-attention q, fused k/v, out
        _linear(out, f"{hf}.encoder_attn.q_proj", ct2, f"{prefix}/attention/linear_0")
        k, v = np.split(ct2[f"{prefix}/attention/linear_1/weight"], 2)
        _kb, vb = np.split(ct2[f"{prefix}/attention/linear_1/bias"], 2)
        out |= {f"{hf}.encoder_attn.k_proj.weight": k, f"{hf}.encoder_attn.v_proj.weight": v,
                f"{hf}.encoder_attn.v_proj.bias": vb}  # fmt: skip
        _linear(out, f"{hf}.encoder_attn.out_proj", ct2, f"{prefix}/attention/linear_2")
        _norm(out, f"{hf}.encoder_attn_layer_norm", ct2, f"{prefix}/attention/layer_norm")
    _linear(out, f"{hf}.fc1", ct2, f"{prefix}/ffn/linear_0")
    _linear(out, f"{hf}.fc2", ct2, f"{prefix}/ffn/linear_1")
    _norm(out, f"{hf}.final_layer_norm", ct2, f"{prefix}/ffn/layer_norm")


def _layers(ct2: dict[str, np.ndarray], side: str) -> int:
    return len({key.split("/")[1] for key in ct2 if re.match(rf"{side}/layer_\d+/", key)})


def state_dict(ct2: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        _linear(out, f"model.encoder.{conv}", ct2, f"encoder/{conv}")
    out["model.encoder.embed_positions.weight"] = ct2["encoder/position_encodings/encodings"]
    for side in ("encoder", "decoder"):
        for i in range(_layers(ct2, side)):
            _layer(out, f"model.{side}.layers.{i}", ct2, f"{side}/layer_{i}")
        _norm(out, f"model.{side}.layer_norm", ct2, f"{side}/layer_norm")
    out["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    out["model.decoder.embed_positions.weight"] = ct2["decoder/position_encodings/encodings"]
    # proj_out is tied to embed_tokens (tie_word_embeddings): saved once, as transformers does.
    return {key: np.ascontiguousarray(value) for key, value in out.items()}


def convert(ct2_dir: Path, out_dir: Path) -> Path:
    """Write a transformers Whisper checkpoint for `ct2_dir` into `out_dir`, atomically."""
    from safetensors.numpy import save_file
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    ct2 = read_ct2(ct2_dir / "model.bin")
    meta = json.loads((ct2_dir / "config.json").read_text())
    weights = state_dict(ct2)
    vocab, d_model = ct2["decoder/embeddings/weight"].shape
    mel_bins = ct2["encoder/conv1/weight"].shape[1]  # 80 for base, 128 for large-v3
    # Generation settings live in the generation config only (transformers warns otherwise).
    config = WhisperConfig(
        vocab_size=vocab, num_mel_bins=mel_bins, d_model=d_model,
        encoder_layers=_layers(ct2, "encoder"), decoder_layers=_layers(ct2, "decoder"),
        encoder_attention_heads=int(ct2["encoder/num_heads"]),
        decoder_attention_heads=int(ct2["decoder/num_heads"]),
        encoder_ffn_dim=ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
        tie_word_embeddings=True, torch_dtype="float16", suppress_tokens=None, begin_suppress_tokens=None,
    )  # fmt: skip

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from a service user
    try:
        # The packaged tokenizer stops at <|notimestamps|> (50363): append the 1501 timestamps.
        tokens = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8"))
        first = max(token["id"] for token in tokens["added_tokens"]) + 1
        tokens["added_tokens"] += [
            {"id": first + i, "content": text, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": False}
            for i, text in enumerate(TIMESTAMP_TOKENS)
        ]  # fmt: skip
        (staging / "tokenizer.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
        tokenizer = WhisperTokenizerFast(
            tokenizer_file=str(staging / "tokenizer.json"), bos_token="<|endoftext|>",
            eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|endoftext|>",
        )  # fmt: skip
        if len(tokenizer) != vocab:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model {vocab}")
        WhisperProcessor(WhisperFeatureExtractor(feature_size=mel_bins), tokenizer).save_pretrained(staging)

        lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in meta["lang_ids"]}
        special = tokenizer.convert_tokens_to_ids
        # No forced_decoder_ids: language and task are generation arguments.
        generation = GenerationConfig(
            decoder_start_token_id=special("<|startoftranscript|>"), bos_token_id=special("<|endoftext|>"),
            eos_token_id=special("<|endoftext|>"), pad_token_id=special("<|endoftext|>"),
            max_length=config.max_target_positions, is_multilingual=len(lang_to_id) > 1,
            lang_to_id=lang_to_id,
            task_to_id={"transcribe": special("<|transcribe|>"), "translate": special("<|translate|>")},
            no_timestamps_token_id=special("<|notimestamps|>"), prev_sot_token_id=special("<|startofprev|>"),
            suppress_tokens=meta["suppress_ids"], begin_suppress_tokens=meta["suppress_ids_begin"],
            alignment_heads=meta["alignment_heads"], max_initial_timestamp_index=50,
            return_timestamps=False,
        )  # fmt: skip
        config.save_pretrained(staging)
        generation.save_pretrained(staging)
        save_file(weights, str(staging / "model.safetensors"), metadata={"format": "pt"})
        shutil.rmtree(out_dir, ignore_errors=True)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m functions.belle2.convert CT2_DIR OUT_DIR")
    print(convert(Path(sys.argv[1]), Path(sys.argv[2])))
