"""The CT2 → transformers converter, on the real bundled whisper-base: the checkpoint is complete,
safetensors-only, carries the same weights, and decodes exactly as faster-whisper does."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from functions.belle2.convert import TIMESTAMP_TOKENS, convert, read_ct2
from infra.models import assemble_whisper_base, derive_whisper_base_hf
from tests.support.audio import decode_audio
from tests.support.paths import AUDIO


@pytest.fixture(scope="module")
def ct2_dir(model_cache: Path) -> Path:
    return assemble_whisper_base(model_cache)


@pytest.fixture(scope="module")
def checkpoint(ct2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(ct2_dir, tmp_path_factory.mktemp("convert") / "whisper-base-hf")


def test_checkpoint_is_safetensors_only_and_complete(checkpoint: Path) -> None:
    names = {path.name for path in checkpoint.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "preprocessor_config.json",
            "tokenizer.json", "tokenizer_config.json"} <= names  # fmt: skip
    assert not [name for name in names if name.endswith((".bin", ".pt", ".ckpt"))]
    assert not [name for name in checkpoint.parent.iterdir() if name.name.startswith(".")], "staging left"


def test_config_follows_the_ct2_model(checkpoint: Path, ct2_dir: Path) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["num_mel_bins"] == 80  # conv1's input channels for base
    assert config["encoder_attention_heads"] == config["decoder_attention_heads"] == 8
    assert config["encoder_layers"] == config["decoder_layers"] == 6
    assert config["vocab_size"] == 51865 and config.get("tie_word_embeddings", True) is True

    generation = json.loads((checkpoint / "generation_config.json").read_text())
    ct2_meta = json.loads((ct2_dir / "config.json").read_text())
    assert "forced_decoder_ids" not in generation or generation["forced_decoder_ids"] is None
    assert generation["lang_to_id"]["<|zh|>"] == 50260 and generation["lang_to_id"]["<|en|>"] == 50259
    assert generation["task_to_id"] == {"transcribe": 50359, "translate": 50358}
    assert generation["no_timestamps_token_id"] == 50363
    assert generation["alignment_heads"] == ct2_meta["alignment_heads"]
    assert generation["suppress_tokens"] == ct2_meta["suppress_ids"]
    assert generation["begin_suppress_tokens"] == ct2_meta["suppress_ids_begin"]


def test_tokenizer_gains_the_1501_timestamp_tokens(checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    assert len(tokenizer) == 51865
    assert tokenizer.convert_tokens_to_ids("<|notimestamps|>") == 50363
    assert tokenizer.convert_tokens_to_ids(TIMESTAMP_TOKENS[0]) == 50364 and TIMESTAMP_TOKENS[0] == "<|0.00|>"
    assert tokenizer.convert_tokens_to_ids("<|30.00|>") == 51864


def test_weights_are_the_ct2_weights_unfused(checkpoint: Path, ct2_dir: Path) -> None:
    weights = load_file(str(checkpoint / "model.safetensors"))
    ct2 = read_ct2(ct2_dir / "model.bin")
    fused = ct2["encoder/layer_2/self_attention/linear_0/weight"]
    q, k, v = (weights[f"model.encoder.layers.2.self_attn.{x}_proj.weight"] for x in "qkv")
    np.testing.assert_array_equal(np.concatenate([q, k, v]), fused)
    assert "model.encoder.layers.2.self_attn.k_proj.bias" not in weights
    assert not ct2["encoder/layer_2/self_attention/linear_0/bias"][512:1024].any()  # k's zero bias
    cross_kv = ct2["decoder/layer_5/attention/linear_1/weight"]
    v_proj = weights["model.decoder.layers.5.encoder_attn.v_proj.weight"]
    np.testing.assert_array_equal(v_proj, cross_kv[512:])
    np.testing.assert_array_equal(
        weights["model.decoder.layers.5.encoder_attn.out_proj.weight"],
        ct2["decoder/layer_5/attention/linear_2/weight"],
    )
    assert "proj_out.weight" not in weights  # tied to embed_tokens


def test_transcript_is_identical_to_faster_whisper(checkpoint: Path, ct2_dir: Path) -> None:
    # Same weights, same greedy search, no timestamps, one 30 s window: the same tokens.
    import torch
    from faster_whisper import WhisperModel
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    audio = decode_audio(AUDIO / "jfk.flac")
    reference = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32", cpu_threads=2)
    segments, _ = reference.transcribe(
        audio, language="en", beam_size=1, without_timestamps=True, temperature=0.0,
        condition_on_previous_text=False,
    )  # fmt: skip
    expected = "".join(segment.text for segment in segments).strip()

    model = AutoModelForSpeechSeq2Seq.from_pretrained(checkpoint, torch_dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(checkpoint)
    features = processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features
    with torch.inference_mode():
        tokens = model.generate(features, language="en", task="transcribe")
    text = processor.tokenizer.decode(tokens[0], skip_special_tokens=True).strip()
    assert text == expected, (text, expected)
    assert "ask not what your country can do for you" in text


def test_setup_leaves_a_derived_checkpoint_alone(ct2_dir: Path, checkpoint: Path) -> None:
    stamp = (checkpoint / "model.safetensors").stat().st_mtime_ns
    assert derive_whisper_base_hf(ct2_dir, checkpoint) == checkpoint
    assert (checkpoint / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_model_that_is_not_whisper_is_refused(tmp_path: Path) -> None:
    spec = b"TransformerSpec\x00"
    (tmp_path / "model.bin").write_bytes(struct.pack("<IH", 6, len(spec)) + spec + struct.pack("<I", 1))
    with pytest.raises(ValueError, match="not a Whisper model"):
        read_ct2(tmp_path / "model.bin")
