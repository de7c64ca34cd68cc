"""Media intake: what every model function does to a user's file before a model hears it, and
the windows the decoded audio is cut into for the model.

One path for every file: `fetch` it from the store (the version that was admitted, within
MAX_UPLOAD_BYTES), `probe` it (only media containers, only the one local file), `choose_track`,
`start_offset` of that track on the file's timeline, then `decode` it to 16 kHz mono s16le on disk
within the limits (`Limits`). Each refusal is a `JobFailed` with its own code and a plain message;
no ffmpeg log line reaches a user.

Rules and where they come from:
- ffmpeg picks a demuxer from a file's content, not its name, and some demuxers open other files
  or URLs (HLS and DASH playlists, concat/ffconcat lists, image sequences, SDP). ffmpeg's own
  `-format_whitelist` and `-protocol_whitelist` input options (ffmpeg-formats(1), "Format
  Options"; ffmpeg-protocols(1)) restrict probing and decoding to `MEDIA_DEMUXERS` and the `file`
  protocol, so nothing in a file can make the worker read anything but its own input.
- ffmpeg and ffprobe parse hostile bytes: they run with `CHILD_ENV` only (PATH, locale, TMPDIR),
  never with the function's environment, which holds the S3 secret and whatever else it was given.
- A track is the default-flagged audio stream (`disposition.default`, as players choose), else the
  first; `audio_track` (0-based among audio streams, ffmpeg's `a:N` stream specifier) overrides.
- Channels are mixed by us, not by ffmpeg's `-ac 1`: ffmpeg refuses to rematrix more than eight
  channels without a layout, and a plain mean of channels that cancel (R = -L) is silence. The mix
  is the mean of the channels that carry sound, each turned to the strongest's polarity.
- Raw PCM output drops a stream's start time (a track that starts at 5 s comes out at 0 s) and
  squeezes out gaps: ffmpeg's `aresample` (async, first_pts=0) pads both with silence, so sample
  n of the decoded audio is at n / 16000 s on the file's own timeline. `start_offset` (the first
  packet's time) is reported, not added again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from minio import Minio
from minio.error import S3Error, ServerError
from minio.helpers import DictType

from events import storage
from events.models import AudioTrack, MediaInfo, ObjectRef
from events.runtime.function import TransientError
from events.settings import Settings
from functions.transcriber.schema import SAMPLE_RATE, JobFailed

# Demuxers that read one file and nothing else: audio formats and audio/video containers.
# Playlists (hls, dash), lists (concat), image sequences (image2, *_pipe), SDP/RTP and devices are
# left out on purpose. ffmpeg matches each name against any of a demuxer's names ("mov" covers
# mov,mp4,m4a,3gp,3g2,mj2; "matroska" covers webm).
MEDIA_DEMUXERS = (
    # audio
    "aac", "ac3", "aiff", "amr", "amrnb", "amrwb", "ape", "au", "caf", "dsf", "dts", "dtshd",
    "eac3", "flac", "g722", "g723_1", "g729", "gsm", "iff", "loas", "mlp", "mp3", "mpc", "mpc8",
    "ogg", "tak", "truehd", "tta", "voc", "w64", "wav", "wv", "xwma",
    # audio and video containers
    "asf", "avi", "dv", "flv", "matroska", "mov", "mpeg", "mpegts", "mxf", "nut", "rm", "wtv",
)  # fmt: skip
PROTOCOLS = "file"
# No single allocation over 256 MiB (ffmpeg's -max_alloc): a MOV header compressed inside itself
# (nested `cmov`) made ffprobe allocate gigabytes from a file under 1 MB.
MAX_ALLOC_BYTES = 256 * 2**20
_WHITELISTS = [
    "-max_alloc", str(MAX_ALLOC_BYTES),
    "-protocol_whitelist", PROTOCOLS, "-format_whitelist", ",".join(MEDIA_DEMUXERS),
]  # fmt: skip
# ffmpeg's resampler handles at most this many channels.
MAX_CHANNELS = 64

# What a refused format is, in words, for the message.
_REFUSED_KINDS = {
    "hls": "an HLS playlist",
    "dash": "a DASH manifest",
    "webm_dash_manifest": "a DASH manifest",
    "concat": "a concat (ffconcat) file list",
    "image2": "an image sequence",
    "sdp": "an SDP session description",
    "rtp": "an RTP stream description",
    "tty": "a text file",
}
_PROBE_TIMEOUT_S = 600.0
_MAX_TITLE = 200
# The only variables ffmpeg and ffprobe inherit: what finds the binaries, the locale of their
# messages and where temporary files go. No secret, whatever the function's environment holds.
CHILD_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR")
# An eTag as RFC 9110 (8.8.3) spells one between its quotes: anything else names no version.
_ETAG = re.compile(r"^[\x21\x23-\x7e]{1,200}$")
_CHUNK_BYTES = 2**20


@dataclass(frozen=True)
class Limits:
    """How much work one file may cause. `max_seconds`: longest media, checked against the
    declared duration before decoding and against the decoded samples while decoding;
    `decode_timeout_s`: wall time for probing plus decoding."""

    max_seconds: float
    decode_timeout_s: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits `settings` set (MAX_MEDIA_SECONDS, DECODE_TIMEOUT_S)."""
        return cls(settings.max_media_seconds, settings.decode_timeout_s)


@dataclass
class Probe:
    """What ffprobe says of a file (`format_name`, `duration_s` declared or None, `start_s` the
    container's zero) and its audio streams as `AudioTrack`s, in file order."""

    format_name: str
    duration_s: float | None
    start_s: float
    tracks: list[AudioTrack]
    # Streams other than audio (video, subtitles, cover art): then the container's duration is
    # not the audio's, and says nothing about a cut-off file.
    other_streams: int = 0


@dataclass
class DecodedAudio:
    """Media decoded to 16 kHz mono s16le on local disk (`samples` int16 samples at 16 kHz), read
    window by window through a memory map, so a file of hours never sits in memory as a whole.
    `media` says what was decoded (None for audio that did not come from `decode`)."""

    path: Path
    samples: int
    media: MediaInfo | None = None

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def pcm(self) -> np.ndarray:
        """int16, shape (samples,)."""
        if self.samples == 0:
            return np.zeros(0, np.int16)
        return np.memmap(self.path, dtype=np.int16, mode="r")

    def window(self, start: int, end: int) -> np.ndarray:
        """float32 in [-1, 1), shape (end - start,), samples `start` to `end`."""
        return self.pcm()[start:end].astype(np.float32) / 32768.0


def windows(
    audio: DecodedAudio, window_s: float, search_s: float = 5.0, *, first_s: float = 0.0
) -> list[tuple[int, int]]:
    """Sample ranges `(start, end)` (16 kHz samples, end exclusive) covering the whole audio, each
    of about `window_s` seconds and cut at the quietest 20 ms within the last `search_s` seconds
    before its end, so a cut seldom falls inside a word. Audio up to 1.25 windows long is one
    range; only one search region at a time is read into memory.

    `first_s` (FIRST_WINDOW_S; 0: off) makes the first range about that long, cut the same way,
    when the audio is over 1.25 times it: the model's first segments then come after seconds of
    work, not after a whole `window_s` window, while later ranges stay `window_s` long for
    throughput. A `first_s` of `window_s` or more changes nothing."""
    length, size = audio.samples, int(window_s * SAMPLE_RATE)
    first = int(first_s * SAMPLE_RATE) if 0 < first_s < window_s else size
    if length <= first * 1.25:
        return [(0, length)]
    pcm = audio.pcm()
    ranges, start = [], 0
    if first < size:
        cut = _quietest_cut(pcm, first, min(search_s, first_s / 2))
        ranges.append((0, cut))
        start = cut
    while length - start > size * 1.25:
        cut = _quietest_cut(pcm, start + size, search_s)
        ranges.append((start, cut))
        start = cut
    ranges.append((start, length))
    return ranges


def _quietest_cut(pcm: np.ndarray, end: int, search_s: float) -> int:
    """The middle of the quietest 20 ms frame (least mean square) of `pcm` (int16) within the
    `search_s` seconds before sample `end`: where a window ending near `end` is cut."""
    frame = SAMPLE_RATE // 50
    hunt_from = max(end - int(search_s * SAMPLE_RATE), 0)
    region = pcm[hunt_from:end].astype(np.float32)
    frames = region[: len(region) // frame * frame].reshape(-1, frame)
    quietest = int(np.argmin((frames**2).mean(axis=1))) if len(frames) else 0
    return hunt_from + quietest * frame + frame // 2


# -- fetching ------------------------------------------------------------------------------------


def fetch(store: Minio, media: ObjectRef, path: Path, limit_bytes: int) -> None:
    """The object `media` names, into `path`: the very version that was admitted, and only when
    it has at most `limit_bytes` (MAX_UPLOAD_BYTES), both settled before a byte is read.

    The version is pinned with S3's `If-Match` on the HEAD and on the GET: `media.etag` when the
    request named one (a bucket notification, an upload, a reference the API looked up), else the
    eTag of the version whose size was checked, so an object replaced in between is never read
    unchecked. The bytes are counted while they stream, too.

    Raises JobFailed: `media_missing` (no such object or bucket), `media_too_large`,
    `media_changed` (the object is not the version the request named: replaced since), or
    `media_key_invalid` (a name the client refuses); TransientError when the store errs or is away."""
    where = f"s3://{media.bucket}/{media.key}"
    try:
        stat = store.stat_object(media.bucket, media.key, extra_headers=_version(media.etag, where))
        size = stat.size or 0
        if size > limit_bytes:
            raise _too_large(size, limit_bytes)
        response = store.get_object(
            media.bucket, media.key, request_headers=_version(media.etag or stat.etag, where)
        )
        try:
            received = 0
            with open(path, "wb") as out:
                for chunk in response.stream(_CHUNK_BYTES):
                    received += len(chunk)
                    if received > limit_bytes:  # a store whose HEAD said less than it sends
                        raise _too_large(received, limit_bytes)
                    out.write(chunk)
        finally:
            response.close()
            response.release_conn()
    except S3Error as error:
        if error.code == "PreconditionFailed":
            raise _changed(where) from error
        if error.code in ("NoSuchKey", "NoSuchBucket", "ResourceNotFound"):
            raise JobFailed("media_missing", f"{where} does not exist") from error
        raise TransientError(f"storage error: {error}") from error
    except ServerError as error:  # minio-py's error for a HEAD answered without an S3 error code
        if error.status_code == 412:
            raise _changed(where) from error
        raise TransientError(f"storage error: {error}") from error
    except storage.UNREACHABLE as error:
        raise TransientError(f"storage unreachable: {error}") from error
    except ValueError as error:  # the client refuses the name itself (a `..` segment)
        raise JobFailed("media_key_invalid", f"{media.key!r} is not a usable object key: {error}") from error


def _version(etag: str | None, where: str) -> DictType | None:
    """The `If-Match` header of the version `etag` names (None: any version)."""
    if etag is None:
        return None
    bare = etag.strip().strip('"')  # S3 quotes eTags in headers; notifications and records do not
    if not _ETAG.match(bare):
        raise _changed(where)
    return {"If-Match": f'"{bare}"'}


def _too_large(size: int, limit_bytes: int) -> JobFailed:
    return JobFailed(
        "media_too_large", f"the media is {size} bytes, over the limit of {limit_bytes} (MAX_UPLOAD_BYTES)"
    )


def _changed(where: str) -> JobFailed:
    return JobFailed(
        "media_changed",
        f"{where} is not the version the request named (its eTag differs): it was replaced or "
        "deleted after the job was requested; request the job again for the new version",
    )


def child_env() -> dict[str, str]:
    """The environment of an ffmpeg or ffprobe child: `CHILD_ENV` from ours, nothing else."""
    return {name: os.environ[name] for name in CHILD_ENV if name in os.environ}


# -- probing ------------------------------------------------------------------------------------


def probe(media: Path, timeout_s: float = _PROBE_TIMEOUT_S) -> Probe:
    """ffprobe `media` (formats and protocols allow-listed). Raises JobFailed: `media_empty` (0
    bytes), `media_unsupported` (not an audio or video container: a playlist, a list, an image,
    text), `media_unreadable` (damaged, incomplete, or no answer within `timeout_s`),
    `media_no_audio`."""
    if media.stat().st_size == 0:
        raise JobFailed("media_empty", "the media file is empty (0 bytes)")
    command = [
        "ffprobe", "-v", "error", "-hide_banner", *_WHITELISTS,
        "-show_format", "-show_streams", "-of", "json", str(media),
    ]  # fmt: skip
    result = _run(command, timeout_s, "reading the file's header")
    if result.returncode != 0:
        raise refusal(result.stderr.decode(errors="replace"))
    document = json.loads(result.stdout or b"{}")
    fmt = document.get("format") or {}
    every = document.get("streams") or []
    streams = [s for s in every if s.get("codec_type") == "audio"]
    tracks = [_track(position, stream) for position, stream in enumerate(streams)]
    if not tracks:
        raise JobFailed("media_no_audio", "the media has no audio track")
    chosen_duration = _float(fmt.get("duration"))
    return Probe(
        format_name=str(fmt.get("format_name") or "unknown"),
        duration_s=chosen_duration,
        start_s=_float(fmt.get("start_time")) or 0.0,
        tracks=tracks,
        other_streams=len(every) - len(streams),
    )


def refusal(stderr: str) -> JobFailed:
    """The JobFailed for ffmpeg/ffprobe's `stderr`, in plain words (the log itself is not shown)."""
    refused = re.search(r"\[(\w+) @ [^\]]*\] Format not on whitelist", stderr)
    if refused:
        name = refused.group(1)
        kind = _REFUSED_KINDS.get(name) or (
            "an image" if name.endswith("_pipe") else f"a {name} file, which is not an accepted media format"
        )
        return JobFailed(
            "media_unsupported",
            f"the file is {kind}, not audio or video: playlists, file lists and images are not "
            "transcribed (its name does not matter, its content does)",
        )
    if re.search(r"decoder .*not found", stderr, re.IGNORECASE):
        return JobFailed("media_unsupported_codec", "the audio codec of this file is not supported")
    if "End of file" in stderr:
        return JobFailed("media_unreadable", "the file ends before any audio: it is incomplete or cut off")
    if "Invalid data found" in stderr or "Invalid argument" in stderr:
        return JobFailed("media_unreadable", "the file is damaged or is not an audio or video file")
    return JobFailed("media_unreadable", "the media could not be read: it is damaged or in no known format")


def _track(position: int, stream: dict[str, Any]) -> AudioTrack:
    tags = {str(k).lower(): str(v) for k, v in (stream.get("tags") or {}).items()}
    # Tags are the uploader's text: a language tag is kept only when it is one, a title is cut short.
    language = tags.get("language", "").lower()
    title = tags.get("title")
    return AudioTrack(
        index=position,
        stream_index=int(stream.get("index", position)),
        codec=stream.get("codec_name"),
        channels=int(stream.get("channels") or 0),
        sample_rate=int(stream.get("sample_rate") or 0) or None,
        language=language if re.fullmatch(r"[a-z]{2,3}", language) and language != "und" else None,
        title=title[:_MAX_TITLE] if title else None,
        default=bool((stream.get("disposition") or {}).get("default")),
    )


def choose_track(found: Probe, requested: int | None = None) -> AudioTrack:
    """The track to transcribe: `requested` (0-based among audio tracks), else the one flagged
    default, else the first. Raises JobFailed `audio_track_invalid` for a track that is not there."""
    if requested is not None:
        if not 0 <= requested < len(found.tracks):
            last = len(found.tracks) - 1
            have = "one audio track (0)" if last == 0 else f"{last + 1} audio tracks (0 to {last})"
            raise JobFailed("audio_track_invalid", f"audio_track={requested}, but the media has {have}")
        return found.tracks[requested]
    return next((track for track in found.tracks if track.default), found.tracks[0])


def start_offset(media: Path, found: Probe, track: AudioTrack, timeout_s: float = _PROBE_TIMEOUT_S) -> float:
    """Seconds from the container's start to the track's first packet (≥ 0). Read from the packets:
    a quick probe can report 0 for a track that starts later. 0 when it cannot be read."""
    command = [
        "ffprobe", "-v", "error", "-hide_banner", *_WHITELISTS, "-select_streams", f"a:{track.index}",
        "-show_entries", "packet=pts_time", "-read_intervals", "%+#1", "-of", "json", str(media),
    ]  # fmt: skip
    try:
        result = _run(command, timeout_s, "finding where the audio starts")
    except JobFailed:
        return 0.0
    packets = json.loads(result.stdout or b"{}").get("packets") or []
    first = _float(packets[0].get("pts_time")) if packets else None
    if first is None:
        return 0.0
    return round(max(0.0, first - found.start_s), 3)


# -- decoding -----------------------------------------------------------------------------------

# A channel this far (energy ratio, -30 dB) below the strongest carries no more than hiss: it is
# left out of the mix, or the hiss of many such channels would bury the one that speaks.
_SILENT_CHANNEL = 1e-3
# Audio-only media shorter than declared by more than this (and 2 %) was cut off.
_TRUNCATION_SLACK_S = 0.5


def decode(
    media: Path,
    target: Path,
    limits: Limits | None = None,
    requested_track: int | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> DecodedAudio:
    """`media` (any accepted audio or video container) to 16 kHz mono s16le in `target`, with
    `MediaInfo` saying which track, how it was mixed, where it starts on the file's timeline and
    whether the file was cut short. `on_progress` gets the decoded seconds now and then.

    Raises JobFailed: everything `probe` raises; `audio_track_invalid`; `media_too_long` (declared or
    decoded past `limits.max_seconds`); `media_decode_timeout` (past `limits.decode_timeout_s`);
    `media_unsupported_codec`, `media_unreadable`, `media_zero_duration`."""
    limits = limits or Limits.of(Settings())
    deadline = time.monotonic() + limits.decode_timeout_s
    found = probe(media, limits.decode_timeout_s)
    track = choose_track(found, requested_track)
    if track.channels > MAX_CHANNELS:
        raise JobFailed(
            "media_too_many_channels",
            f"the audio track has {track.channels} channels; at most {MAX_CHANNELS} can be decoded",
        )
    if found.duration_s is not None and found.duration_s > limits.max_seconds:
        raise too_long(limits, found.duration_s)
    offset = start_offset(media, found, track, max(deadline - time.monotonic(), 1.0))

    mix = _Pass(media, track, limits, deadline, on_progress)
    covariance, samples, cut_short = mix.run(target, weights=None)
    width = len(covariance)
    downmix = "mono" if width == 1 else f"mean of {width} channels"
    if width > 1 and samples:
        weights, downmix = _aligned_mix(covariance)
        if weights is not None:
            _, samples, cut_short = mix.run(target, weights=weights)
    if samples == 0:
        raise JobFailed("media_zero_duration", "the audio track lasts 0 s")
    seconds = samples / SAMPLE_RATE
    declared = found.duration_s
    # Audio alone in its file should last as long as the file says; beside a video it may not.
    # (`seconds` counts from the file's start: the decode pads the track's late start with silence.)
    short = (
        declared is not None
        and not found.other_streams
        and declared - seconds > max(_TRUNCATION_SLACK_S, 0.02 * declared)
    )
    info = MediaInfo(
        format=found.format_name,
        track=track,
        track_count=len(found.tracks),
        start_offset_s=offset,
        duration_s=round(seconds, 3),
        declared_duration_s=None if declared is None else round(declared, 3),
        truncated=bool(short or cut_short),
        downmix=downmix,
    )
    return DecodedAudio(target, samples, info)


def too_long(limits: Limits, seconds: float | None = None) -> JobFailed:
    """`media_too_long`, naming the media's length when it is known."""
    limit = f"the limit of {_clock(limits.max_seconds)} (MAX_MEDIA_SECONDS={limits.max_seconds:g})"
    if seconds is None:
        return JobFailed("media_too_long", f"the media lasts longer than {limit}")
    return JobFailed("media_too_long", f"the media lasts {_clock(seconds)}, over {limit}")


def _aligned_mix(covariance: np.ndarray) -> tuple[np.ndarray | None, str]:
    """How to mix channels whose covariance (float64, shape (n, n)) is given so that speech
    survives: channels at least `_SILENT_CHANNEL` of the strongest's energy are averaged, each
    turned, loudest first, to the polarity that adds to the mix so far (a channel that is the
    inverse of another, whole or in part, would cancel it). Returns the weights (None: the plain
    mean is right) and the mix in words."""
    energies = np.diag(covariance)
    width = len(energies)
    strongest = int(np.argmax(energies))
    if energies[strongest] <= 0:
        return None, f"mean of {width} channels"
    active = [c for c in range(width) if energies[c] >= energies[strongest] * _SILENT_CHANNEL]
    # Loudest first, each channel joins the mix with the polarity that adds to what is there.
    signs = np.zeros(width)
    for c in sorted(active, key=lambda c: -energies[c]):
        signs[c] = -1.0 if float(covariance[c] @ signs) < 0 else 1.0
    inverted = [c for c in active if signs[c] < 0]
    if len(active) == width and not inverted:
        return None, f"mean of {width} channels"
    weights = signs / len(active)
    described = f"mean of channel(s) {', '.join(str(c) for c in active)} of {width}"
    if inverted:
        described += (
            f", channel(s) {', '.join(str(c) for c in inverted)} inverted to match channel {strongest}"
        )
    if len(active) < width:
        described += f"; {width - len(active)} near-silent left out"
    return weights, described


class _Pass:
    """One streaming decode of a track through ffmpeg's stdout: every channel at 16 kHz s16le,
    mixed here one second at a time, so the output on disk is mono whatever the channel count."""

    def __init__(
        self,
        media: Path,
        track: AudioTrack,
        limits: Limits,
        deadline: float,
        on_progress: Callable[[float], None] | None,
    ) -> None:
        self.media, self.track, self.limits = media, track, limits
        self.deadline, self.on_progress = deadline, on_progress

    def run(self, target: Path, weights: np.ndarray | None) -> tuple[np.ndarray, int, bool]:
        """Decode into `target`, each output sample the channels' dot product with `weights`
        (float64, shape (channels,); None: their mean). Returns the channels' covariance (float64,
        shape (channels, channels), mean products at full scale 1.0), the samples written, and
        whether ffmpeg met damaged or missing data after some audio (the file was cut short)."""
        width = max(self.track.channels, 1)
        command = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "0",
            *_WHITELISTS, "-i", str(self.media), "-map", f"0:a:{self.track.index}",
            "-vn", "-sn", "-dn", "-f", "s16le", "-acodec", "pcm_s16le", "-ar", str(SAMPLE_RATE),
            # The file's own timeline: a late start and gaps (DTX, signal loss) become silence
            # instead of being squeezed out (ffmpeg-filters(1), aresample: async, first_pts).
            "-af", "aresample=async=1:min_hard_comp=0.1:first_pts=0",
            # The track's own channel count, kept: the mix is done here (see the module docstring).
            "-ac", str(width), "pipe:1",
        ]  # fmt: skip
        max_samples = int(self.limits.max_seconds * SAMPLE_RATE)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            process.kill()

        remaining = self.deadline - time.monotonic()
        timer = threading.Timer(max(remaining, 0.0), kill)
        timer.start()
        stderr: list[bytes] = []
        # stderr is drained beside stdout, or a chatty ffmpeg blocks on a full pipe.
        reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        mixing = np.full(width, 1.0 / width) if weights is None else np.asarray(weights, np.float64)
        products = np.zeros((width, width), np.float64)
        samples, over_limit = 0, False
        try:
            with open(target, "wb") as out:
                pending = b""
                frame = 2 * width
                while True:
                    chunk = process.stdout.read(frame * SAMPLE_RATE)  # type: ignore[union-attr]
                    if not chunk:
                        break
                    pending += chunk
                    usable = len(pending) // frame * frame
                    if not usable:
                        continue
                    block = np.frombuffer(pending[:usable], np.int16).reshape(-1, width)
                    pending = pending[usable:]
                    scaled = block.astype(np.float64) / 32768.0
                    products += scaled.T @ scaled
                    mono = scaled @ mixing
                    out.write(np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16).tobytes())
                    samples += len(mono)
                    if samples > max_samples:
                        over_limit = True
                        process.kill()
                        break
                    if self.on_progress is not None:
                        self.on_progress(samples / SAMPLE_RATE)
        finally:
            timer.cancel()
            if process.poll() is None and (over_limit or timed_out.is_set()):
                process.kill()
            returncode = process.wait()
            reader.join(timeout=5)
        if timed_out.is_set():
            raise JobFailed(
                "media_decode_timeout",
                f"decoding took longer than {self.limits.decode_timeout_s:g} s (DECODE_TIMEOUT_S)",
            )
        if over_limit:
            raise too_long(self.limits)
        message = b"".join(stderr).decode(errors="replace")
        if returncode != 0 and samples == 0:
            raise refusal(message)
        # ffmpeg met damaged data after some audio: what decoded is kept, and the file is cut short.
        damaged = returncode != 0 or "partial file" in message
        return products / max(samples, 1), samples, samples > 0 and damaged


# -- helpers ------------------------------------------------------------------------------------


def _run(command: list[str], timeout_s: float, doing: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(command, capture_output=True, check=False, timeout=timeout_s, env=child_env())
    except subprocess.TimeoutExpired as error:
        raise JobFailed(
            "media_decode_timeout", f"{doing} took longer than {timeout_s:g} s (DECODE_TIMEOUT_S)"
        ) from error


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and number >= 0 else None  # NaN and negatives: unknown


def _clock(seconds: float) -> str:
    """9h 6m 8s, 4h, 12m 5s, 45s."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return " ".join(part for part in parts if part) or "0s"
