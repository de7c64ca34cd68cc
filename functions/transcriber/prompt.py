"""A job's prompt and hotwords as Whisper reads them: text before `<|startoftranscript|>`, after
`<|startofprev|>`, in a budget of tokens both models share.

Whisper's decoder has a 448-token context and reads at most half of it, less one, as previous
text: 223 tokens. openai-whisper (decoding.py, `_get_initial_tokens`) keeps the prompt's *last*
223 tokens, so a long prompt loses its oldest words rather than failing the job; faster-whisper
(`WhisperModel.get_prompt`) puts the hotwords first and cuts each on its own, which together can
overrun the context. Here both share the one budget: the hotwords first (their first tokens),
then the prompt's last tokens in the room left.
"""

from __future__ import annotations

from collections.abc import Sequence

# n_text_ctx // 2 - 1 for Whisper's 448-token text context (openai-whisper decoding.py).
MAX_PROMPT_TOKENS = 223


def fit_prompt(
    hotwords: Sequence[int], prompt: Sequence[int], limit: int = MAX_PROMPT_TOKENS
) -> tuple[list[int], list[int]]:
    """The hotword tokens and prompt tokens the decoder reads, together at most `limit` tokens:
    the hotwords' first tokens (up to `limit`), then the prompt's last tokens that still fit."""
    kept = list(hotwords[:limit])
    room = limit - len(kept)
    return kept, list(prompt[-room:]) if room > 0 else []


def as_prompt_text(text: str | None) -> str | None:
    """A prompt or hotwords as Whisper's tokenizers are given them: one leading space, as
    openai-whisper and faster-whisper encode a prompt (`" " + text.strip()`); None when empty."""
    if text is None or not text.strip():
        return None
    return " " + text.strip()
