"""Every setting of KlipNote, in one typed object read from the environment.

Each function reads the same `Settings`; production and the embedded stack differ only in the
values (endpoints, credentials, model paths, device). Names are unprefixed environment
variables, as in the decision record (`DEFAULT_TRANSCRIPTION_MODEL`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from events.registry import MODELS


def _cache_home() -> Path:
    return Path.home() / ".cache" / "klipnote"


class Settings(BaseSettings):
    """Every setting of every function, read from unprefixed environment variables (pydantic-
    settings; lists comma separated, tables JSON). docs/settings.md is generated from the fields'
    descriptions (`python -m infra.settings_table`). Units are in the names: `_s` seconds,
    `_bytes` bytes."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    # -- messaging --------------------------------------------------------------------------
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma separated.")
    publish_mode: Literal["structured", "binary"] = Field(
        "structured", description="CloudEvents NATS binding mode written on publish (both are read)."
    )
    ack_wait_s: float = Field(30.0, description="JetStream ack wait; heartbeats run at a third of it.")
    max_deliver: int = Field(5, description="Deliveries of one message before it goes to the DLQ.")
    deliver_headroom: int = Field(
        3,
        ge=1,
        description="Deliveries the server allows beyond the most a consumer's handler could settle "
        "(MAX_DELIVER, plus WEBHOOK_SCHEDULE_S for webhooks): the host dead-letters the first of them "
        "unhandled (every delivery before crashed or hung its process); the rest cover a dead-letter "
        "publish that failed. Their sum is the consumer's max_deliver on the server.",
    )
    router_concurrency: int = Field(
        8, ge=1, description="Requests one ingest replica routes at once (the ingest-router consumer)."
    )
    webhook_concurrency: int = Field(
        32,
        ge=1,
        description="Webhook deliveries one ingest replica makes at once, so a slow receiver holds up "
        "only its own jobs.",
    )
    retry_backoff_s: Annotated[list[float], NoDecode] = Field(
        default=[1.0, 5.0, 30.0, 120.0],
        description="Delays before redelivery after a transient failure, by attempt (comma separated).",
    )
    stream_replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="Copies JetStream keeps of every stream, KV bucket and durable consumer: 1 for a "
        "single server (the embedded stack), 3 on a three-node cluster (R3: a node may go without "
        "losing or stopping anything). Provisioning sets it; changing it later is an update.",
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
    media_buckets: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Buckets a media reference (`media=s3://...`, a CloudEvent's `media`) may name, "
        "read with the service's own credentials (comma separated); unset: the uploads bucket only. "
        "Others are refused (media_bucket_forbidden): never the results bucket of other jobs.",
    )
    results_bucket: str = Field("results", description="Bucket that receives transcripts.")

    # -- routing ----------------------------------------------------------------------------
    default_transcription_model: str = Field(
        "whisperx", description="Model used when neither the request nor a language rule picks one."
    )
    enabled_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(MODELS),
        description="Models that may receive jobs (comma separated). The embedded stack runs a "
        "process for each.",
    )
    language_models: dict[str, str] = Field(
        default_factory=lambda: {"zh": "belle2"},
        description="The language rules: which model a language goes to when no model is asked for "
        '(JSON, e.g. {"zh": "belle2"}); a rule naming a disabled model falls back to the default.',
    )

    # -- ingest API -------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the ingest HTTP API binds to.")
    api_port: int = Field(8080, description="Port of the ingest HTTP API.")
    # min_length: an empty value set by mistake (an empty Secret) would accept `Bearer ` as the key.
    api_key: str | None = Field(None, min_length=1, description="Bearer token required by the API when set.")
    max_upload_bytes: int = Field(2 * 1024**3, description="Largest accepted upload.")
    api_max_body_bytes: int = Field(
        1024**2,
        gt=0,
        description="Largest request body of the API besides the media (a CloudEvent to /v1/events; "
        "the form fields around an upload, whose body may be MAX_UPLOAD_BYTES plus this). Refused "
        "from Content-Length at once, or as soon as a streamed body passes it (413).",
    )
    api_body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait for the next part of a request body; a body that stalls longer "
        "(a slowloris) is answered 408 body_timeout and the connection freed.",
    )
    api_max_event_streams: int = Field(
        100,
        ge=1,
        description="Concurrent live event streams (GET /v1/jobs/{id}/events) one ingest serves; one "
        "more is refused 503 too_many_streams.",
    )
    api_event_stream_max_s: float = Field(
        3600.0,
        gt=0,
        description="Longest life of one live event stream, seconds; it then ends with an "
        "`event: timeout` message (reconnect to go on).",
    )
    openai_wait_s: float = Field(
        300.0,
        ge=0,
        description="Longest wait, seconds, of an OpenAI-compatible request (POST /v1/audio/*) for "
        "its job's end; past it the answer is 504 job_still_running naming the job, which goes on "
        "(poll GET /v1/jobs/{id}). 0 answers at once.",
    )
    result_link_expiry_s: int = Field(
        3600, description="Lifetime of the presigned result links in job records and webhooks."
    )
    uploads_reconcile_interval_s: float = Field(
        60.0,
        ge=0,
        description="How often ingest lists the uploads bucket for objects no notification announced, "
        "seconds (0 turns it off; a negative value is refused).",
    )
    results_ttl_s: int = Field(
        30 * 24 * 3600,
        ge=0,
        description="Seconds after a job ends (completed, failed, canceled) before its upload, "
        "results and record are deleted, unless the request set `delete_after`; 30 days, the JOBS "
        "stream's own age, by default. 0: jobs that end from then on are kept for ever (each job keeps "
        "the `expires_at` it got when it ended; jobs that ended before retention existed have none "
        "and are kept).",
    )
    retention_sweep_interval_s: float = Field(
        300.0,
        ge=0,
        description="How often, in seconds, ingest deletes the jobs whose `expires_at` has passed "
        "(0 turns the sweeper off).",
    )

    # -- webhooks (Standard Webhooks) -------------------------------------------------------
    webhook_secret: str | None = Field(
        None,
        min_length=1,
        description="Signing secret for webhook deliveries (Standard Webhooks, `whsec_` + base64); "
        "without one, requests that ask for a webhook are refused.",
    )
    webhook_schedule_s: Annotated[list[float], NoDecode] = Field(
        default=[0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
        description="Delay before each delivery attempt, seconds (Standard Webhooks' schedule; comma "
        "separated). Its length is the number of attempts.",
    )
    webhook_timeout_s: float = Field(
        15.0,
        gt=0,
        description="The deadline of one delivery attempt, seconds: resolving the host (DNS), "
        "connecting, TLS, sending and reading the answer, all within it.",
    )
    webhook_connect_timeout_s: float = Field(
        5.0,
        gt=0,
        description="How long one attempt may take to open its connection (TCP and TLS), seconds; "
        "never more than WEBHOOK_TIMEOUT_S.",
    )
    webhook_host_concurrency: int = Field(
        4,
        ge=1,
        description="Attempts in flight to one webhook host at once, per ingest replica; a job whose "
        "host is at the bound waits (without counting an attempt) so a slow host delays only its "
        "own jobs.",
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts, addresses or networks (CIDR) webhooks may reach although private, "
        "loopback or link-local (comma separated); every other such address is refused (SSRF).",
    )

    # -- function processes -----------------------------------------------------------------
    health_host: str = Field("127.0.0.1", description="Address of a function's health endpoints.")
    receiver_token: str | None = Field(
        None,
        min_length=1,
        description="Bearer token the CloudEvents receiver of the HTTP transport (`POST /`) requires "
        "when set; without one, only the network boundary keeps others out (docs/security.md).",
    )
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
    batch_size: int = Field(4, description="Batched inference size of the model functions.")
    beam_size: int = Field(
        5,
        ge=1,
        description="Beam search width of both models (1 decodes greedily); a result the "
        "usual checks refuse (compression ratio, log-probability) is decoded again at higher temperatures.",
    )
    alignment_models: dict[str, Path] = Field(
        default_factory=dict,
        description="Local wav2vec2 checkpoints for forced alignment, by language "
        '(JSON, e.g. {"en": "/models/wav2vec2-en"}); other languages keep decoder timings.',
    )
    nltk_data_dir: Path | None = Field(
        None, description="NLTK data (punkt_tab) for alignment (default: <model cache>/nltk_data)."
    )
    diarization_model_dir: Path | None = Field(
        None,
        description="A local pyannote speaker-diarization pipeline (its config.yaml and the "
        "checkpoints it names) for jobs that ask for speakers; unset: Resemblyzer's voice encoder, "
        "which ships in its wheel, with scikit-learn clustering (functions/whisperx/README.md).",
    )
    language_id_windows: int = Field(
        3,
        ge=1,
        description="Language identification listens to up to this many clips of speech (30 s "
        "each), spread across the file, when a job names no language.",
    )
    audio_window_s: float = Field(
        600.0,
        description="Long media is transcribed in windows of about this length, cut at quiet "
        "points, so memory stays bounded however long the file is.",
    )
    first_window_s: float = Field(
        15.0,
        ge=0.0,
        description="The first window of a long file is about this long (cut at a quiet point), so "
        "its first segments are out within seconds of the job starting (2.4 s for a 10-minute file "
        "here, 4.3 s at 30); later windows are "
        "AUDIO_WINDOW_S. 0: every window is AUDIO_WINDOW_S.",
    )
    model_warmup: bool = Field(
        True,
        description="A model function runs one short inference before it reports ready, so the "
        "first job costs what later ones cost (scale-to-zero's cold replicas included).",
    )
    cpu_threads: int = Field(2, description="CPU threads for inference.")

    # -- media limits: no file keeps a worker busy past these --------------------------------
    max_media_seconds: float = Field(
        4 * 3600.0,
        description="Longest media transcribed, seconds: checked against the declared duration "
        "before decoding and against the decoded audio while decoding (media_too_long).",
    )
    decode_timeout_s: float = Field(
        600.0, description="Wall time for probing and decoding one file (media_decode_timeout)."
    )
    stall_timeout_s: float = Field(
        600.0,
        description="A job whose model makes no progress (no segment, no progress report) for this "
        "long fails (transcription_stalled) and frees its worker; heartbeats stop with progress.",
    )
    cancel_check_interval_s: float = Field(
        2.0,
        gt=0,
        description="How often, in seconds, a model function running a job asks whether it was "
        "canceled (one read of the JOBS stream); a canceled job stops at the model's next report "
        "after that.",
    )

    # -- optimize: subtitle rules (defaults from subtitle practice and the decision record) -----
    optimize_min_cue_s: float = Field(1.0, description="Shortest cue on screen, seconds.")
    optimize_max_cue_s: float = Field(7.0, description="Longest cue on screen, seconds.")
    optimize_max_cue_chars: int = Field(200, description="Hard limit of characters in one cue.")
    optimize_max_line_chars: int = Field(42, description="Characters per line, spaced scripts (Latin...).")
    optimize_max_line_chars_cjk: int = Field(16, description="Characters per line, Chinese and Japanese.")
    optimize_max_lines: int = Field(2, description="Lines per cue.")
    optimize_max_cps: float = Field(20.0, description="Reading speed, characters/s, spaced scripts.")
    optimize_max_cps_cjk: float = Field(9.0, description="Reading speed, characters/s, Chinese/Japanese.")
    optimize_loop_max_repeats: int = Field(
        3,
        ge=1,
        description="A word n-gram (or one Chinese/Japanese character) repeated in a row more than this "
        "is a decoding loop and is cut back to one copy (two for a single character).",
    )
    optimize_loop_max_ngram: int = Field(12, description="Longest n-gram checked for loops.")
    optimize_loop_max_sentence_repeats: int = Field(
        2, ge=1, description="A whole sentence repeated in a row more than this is cut back to one copy."
    )
    optimize_hallucinations: Annotated[list[str], NoDecode] = Field(
        default=[
            "Thanks for watching",
            "Thank you for watching",
            "Thank you for watching and see you next time",
            "Please subscribe to my channel",
            "Don't forget to like and subscribe",
            "Subtitles by the Amara.org community",
            "Sous-titres réalisés par la communauté d'Amara.org",
            "Sous-titrage Société Radio-Canada",
            "Untertitel der Amara.org-Community",
            "Untertitelung des ZDF für funk 2017",
            "Vielen Dank fürs Zuschauen",
            "Subtítulos realizados por la comunidad de Amara.org",
            "Gracias por ver el video",
            "Sottotitoli creati dalla comunità Amara.org",
            "Legendas pela comunidade Amara.org",
            "Ondertitels ingediend door de Amara.org gemeenschap",
            "Продолжение следует",
            "字幕由Amara.org社区提供",
            "請不吝點贊 訂閱 轉發 打賞支持明鏡與點點欄目",
            "请不吝点赞 订阅 转发 打赏支持明镜与点点栏目",
            "谢谢观看",
            "感谢观看",
            "謝謝觀看",
            "ご視聴ありがとうございました",
            "시청해주셔서 감사합니다",
        ],
        description="Known silence hallucinations, dropped when one is a segment's whole text (case, "
        "spaces and punctuation ignored, so no entry needs a comma). Comma separated or a JSON list.",
    )
    optimize_traditional_to_simplified: bool = Field(
        True,
        description="Convert Traditional to Simplified characters in Mandarin (zh) transcripts; "
        "Whisper often answers Mandarin in Traditional characters.",
    )
    optimize_segment_wait_s: float = Field(
        30.0,
        description="How long optimize waits for a run's missing segments before the job fails "
        "(segments_incomplete).",
    )

    # -- embedded stack ---------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "klipnote",
        description="Embedded stack state (NATS and SeaweedFS data).",
    )
    uploads_watch: bool = Field(
        True,
        description="Embedded stack only: run the stand-in for MinIO's bucket notifier, which follows "
        "SeaweedFS's filer metadata (`weed filer.meta.tail`) and announces each file stored in the "
        "uploads bucket on `storage.uploads` within about a second; off, only the reconcile "
        "(UPLOADS_RECONCILE_INTERVAL_S) finds dropped files.",
    )

    @field_validator(
        "enabled_models",
        "retry_backoff_s",
        "webhook_schedule_s",
        "webhook_allowed_hosts",
        "media_buckets",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # ENABLED_MODELS=whisperx,belle2 reads better in a manifest than a JSON list.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("optimize_hallucinations", mode="before")
    @classmethod
    def _phrases(cls, value: object) -> object:
        # A JSON list, or comma separated as `to_env` writes lists (entries never need a comma).
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def whisperx_model_path(self) -> Path:
        return self.whisperx_model_dir or self.model_cache_dir / "whisper-base-ct2"

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for a child process to read back."""
        return {name.upper(): env_value(value) for name, value in self.model_dump(exclude_none=True).items()}

    def nltk_data_path(self) -> Path:
        return self.nltk_data_dir or self.model_cache_dir / "nltk_data"

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


def media_bucket_allowed(bucket: str, settings: Settings) -> bool:
    """Whether a media reference may name `bucket` (MEDIA_BUCKETS; unset: the uploads bucket only).
    The one rule for every way a reference comes in (the API's `media=`, a CloudEvent over HTTP
    or NATS): ingest and the workers read media with the service's credentials, which reach every
    bucket, results included, so a caller may name only buckets meant for input (issue 15, the
    confused deputy)."""
    allowed = settings.media_buckets if settings.media_buckets is not None else [settings.uploads_bucket]
    return bucket in allowed


def env_value(value: object) -> str:
    """A setting's value as its environment variable spells it (lists comma separated)."""
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps({key: str(item) for key, item in value.items()})
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
