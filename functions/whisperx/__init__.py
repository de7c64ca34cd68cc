"""whisperx: WhisperX (faster-whisper + pyannote VAD) on the transcription skeleton."""
