"""belle2: BELLE-2 (a Whisper large-v3 Mandarin fine-tune) through transformers, on the
transcription skeleton, with VAD speech regions for segment times."""
