"""Every setting of KlipNote, in one typed object read from the environment.

Each function reads the same `Settings`; production and the embedded stack differ only in the
values (endpoints, credentials, model paths, device). Names are unprefixed environment
variables, as in the decision record (`DEFAULT_TRANSCRIPTION_MODEL`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _cache_home() -> Path:
    return Path.home() / ".cache" / "klipnote"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    # -- messaging --------------------------------------------------------------------------
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma separated.")
    publish_mode: Literal["structured", "binary"] = Field(
        "structured", description="CloudEvents NATS binding mode written on publish (both are read)."
    )
    ack_wait_s: float = Field(30.0, description="JetStream ack wait; heartbeats run at a third of it.")
    max_deliver: int = Field(5, description="Deliveries of one message before it goes to the DLQ.")
    retry_backoff_s: Annotated[list[float], NoDecode] = Field(
        default=[1.0, 5.0, 30.0, 120.0],
        description="Delays before redelivery after a transient failure, by attempt (comma separated).",
    )
    dedupe_window_s: float = Field(
        3600.0, description="JetStream duplicate window: a repeated Nats-Msg-Id within it is dropped."
    )

    # -- object storage ---------------------------------------------------------------------
    s3_endpoint: str = Field("127.0.0.1:8333", description="S3 endpoint host:port (MinIO, SeaweedFS, ...).")
    s3_access_key: str = Field("klipnote", description="S3 access key.")
    s3_secret_key: str = Field("klipnote-dev-secret", description="S3 secret key.")
    s3_secure: bool = Field(False, description="Use TLS for S3.")
    s3_region: str | None = Field(None, description="S3 region, if the store needs one.")
    uploads_bucket: str = Field("uploads", description="Bucket that receives input media.")
    results_bucket: str = Field("results", description="Bucket that receives transcripts.")

    # -- routing ----------------------------------------------------------------------------
    default_transcription_model: str = Field(
        "whisperx", description="Model used when neither the request nor a language rule picks one."
    )
    enabled_models: Annotated[list[str], NoDecode] = Field(
        default=["whisperx"], description="Models that may receive jobs (comma separated)."
    )

    # -- ingest API -------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the ingest HTTP API binds to.")
    api_port: int = Field(8080, description="Port of the ingest HTTP API.")
    api_key: str | None = Field(None, description="Bearer token required by the API when set.")
    max_upload_bytes: int = Field(2 * 1024**3, description="Largest accepted upload.")

    # -- function processes -----------------------------------------------------------------
    health_host: str = Field("127.0.0.1", description="Address of a function's health endpoints.")
    health_port: int = Field(8081, description="Port of a function's health endpoints.")

    # -- models -----------------------------------------------------------------------------
    model_cache_dir: Path = Field(
        default_factory=lambda: _cache_home() / "models",
        description="Where setup assembles bundled models.",
    )
    whisperx_model_dir: Path | None = Field(
        None, description="CTranslate2 model directory for whisperx (default: bundled whisper-base)."
    )
    belle2_model_dir: Path | None = Field(
        None,
        description="Hugging Face Whisper checkpoint (safetensors) for belle2 "
        "(default: the checkpoint setup derives from the bundled whisper-base).",
    )
    model_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Inference device; auto picks CUDA when present."
    )
    compute_type: str | None = Field(
        None, description="CTranslate2 compute type (default int8 on CPU, float16 on CUDA)."
    )
    batch_size: int = Field(4, description="Batched inference size for whisperx.")
    cpu_threads: int = Field(2, description="CPU threads for inference.")

    # -- embedded stack ---------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "klipnote",
        description="Embedded stack state (NATS and SeaweedFS data).",
    )

    @field_validator("enabled_models", "retry_backoff_s", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # ENABLED_MODELS=whisperx,belle2 reads better in a manifest than a JSON list.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def whisperx_model_path(self) -> Path:
        return self.whisperx_model_dir or self.model_cache_dir / "whisper-base-ct2"

    def belle2_model_path(self) -> Path:
        return self.belle2_model_dir or self.model_cache_dir / "whisper-base-hf"

    def resolved_device(self) -> str:
        if self.model_device != "auto":
            return self.model_device
        try:
            import ctranslate2

            return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except ImportError:
            return "cpu"

    def resolved_compute_type(self) -> str:
        if self.compute_type:
            return self.compute_type
        return "float16" if self.resolved_device() == "cuda" else "int8"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
