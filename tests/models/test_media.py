"""Media intake (functions/transcriber/audio.py) on real files and the real ffmpeg: only media containers are
read, and nothing they name; every limit holds before and during decoding; the right track, the
right channels and the file's own timeline. Inputs are made at test time (ffmpeg, the public clips
in ../shared/audio and ../shared/cases/make_media_cases.sh)."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest

from events import storage
from events.models import ObjectRef
from functions.transcriber.audio import JobFailed, Limits, decode, fetch, probe
from infra.embedded.stack import EmbeddedStack
from tests.support.paths import AUDIO, ROOT, ffmpeg

LIMITS = Limits(max_seconds=4 * 3600, decode_timeout_s=120)


def refused(media: Path, tmp_path: Path, limits: Limits = LIMITS, track: int | None = None) -> JobFailed:
    with pytest.raises(JobFailed) as failure:
        decode(media, tmp_path / "audio.s16le", limits, track)
    assert "@ 0x" not in failure.value.message and "[" not in failure.value.message  # no ffmpeg log
    return failure.value


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


# -- only media, and nothing it names --------------------------------------------------------


class OpenWatch:
    """A FIFO standing where a hostile file points: if anything opens it for reading, a writer's
    non-blocking open succeeds, and `opened` says so (an open that no probe can miss)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path, self.opened = path, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader has it open
                time.sleep(0.002)
                continue
            self.opened = True
            os.close(fd)
            return

    def __enter__(self) -> OpenWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def hostile(kind: str, target: Path) -> bytes:
    """A file of `kind` that makes a demuxer open `target` (named relative to the file, as the
    concat demuxer's safe mode allows; with an extension the DASH demuxer allows)."""
    if kind == "hls":
        return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{target.name}\n#EXT-X-ENDLIST\n".encode()
    if kind == "hls-live":
        return f"#EXTM3U\n#EXT-X-TARGETDURATION:60\n#EXTINF:10.0,\n{target.name}\n".encode()
    if kind == "dash":
        return (
            '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'mediaPresentationDuration="PT10S" minBufferTime="PT1S" '
            'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">'
            '<Period><AdaptationSet mimeType="audio/mp4"><Representation id="a" bandwidth="64000">'
            f"<BaseURL>{target.name}</BaseURL></Representation></AdaptationSet></Period></MPD>\n"
        ).encode()
    if kind == "ffconcat":
        return f"ffconcat version 1.0\nfile '{target.name}'\n".encode()
    if kind == "sdp":
        return b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["hls", "hls-live", "dash", "ffconcat", "sdp"])
@pytest.mark.parametrize("name", ["talk.wav", "talk.mp3", "talk.mp4", "media"])
def test_playlists_and_lists_are_refused_and_what_they_name_is_never_opened(
    tmp_path: Path, kind: str, name: str
) -> None:
    target = tmp_path / "secret.mp4"
    media = tmp_path / name
    media.write_bytes(hostile(kind, target))
    with OpenWatch(target) as watch:
        started = time.monotonic()
        failure = refused(media, tmp_path)
    assert failure.code == "media_unsupported", failure.message
    assert "not audio or video" in failure.message
    assert not watch.opened, f"decoding {kind} opened the file it names"
    assert time.monotonic() - started < 30  # a live playlist is refused, never waited on


def test_an_image_and_a_text_file_are_refused_as_unsupported(tmp_path: Path) -> None:
    image = tmp_path / "cover.mp3"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=red:s=32x32",
        "-frames:v",
        "1",
        "-f",
        "image2",
        "-c:v",
        "png",
        str(image),
    )
    assert refused(image, tmp_path).code == "media_unsupported"
    text = tmp_path / "notes.wav"
    text.write_text("these are meeting notes, not a recording\n" * 20)
    assert refused(text, tmp_path).code in {"media_unsupported", "media_unreadable"}


def test_accepted_containers_still_decode(tmp_path: Path) -> None:
    for suffix, codec in [
        ("flac", "flac"),
        ("mp4", "aac"),
        ("ogg", "libopus"),
        ("mkv", "libopus"),
        ("mp3", "libmp3lame"),
    ]:
        media = tmp_path / f"jfk.{suffix}"
        ffmpeg("-i", str(AUDIO / "jfk.flac"), "-t", "2", "-c:a", codec, str(media))
        audio = decode(media, tmp_path / f"{suffix}.s16le", LIMITS)
        assert 1.9 < audio.seconds < 2.2, suffix


# -- bounded work ------------------------------------------------------------------------------


def one_hertz_wav(path: Path, data_bytes: int) -> Path:
    """A WAV header declaring 1 Hz: `data_bytes` of it last data_bytes / 2 seconds."""
    header = struct.pack("<IHHIIHH", 16, 1, 1, 1, 2, 2, 16)
    path.write_bytes(
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + header + b"data"
        + struct.pack("<I", data_bytes) + bytes(data_bytes)
    )  # fmt: skip
    return path


def test_a_low_rate_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = one_hertz_wav(tmp_path / "bomb.wav", 64 * 1024)  # about 9 hours
    started = time.monotonic()
    failure = refused(bomb, tmp_path)
    assert failure.code == "media_too_long"
    assert "MAX_MEDIA_SECONDS" in failure.message and "9h" in failure.message
    assert not (tmp_path / "audio.s16le").exists() or (tmp_path / "audio.s16le").stat().st_size == 0
    assert time.monotonic() - started < 30


def test_the_duration_limit_holds_while_decoding_media_that_declares_none(tmp_path: Path) -> None:
    # A WebM written to a pipe, as browsers record: no duration to check before decoding.
    live = tmp_path / "live.webm"
    ffmpeg("-i", str(AUDIO / "jfk.flac"), "-c:a", "libopus", "-f", "webm", "-live", "1", str(live))
    assert probe(live).duration_s is None
    failure = refused(live, tmp_path, Limits(max_seconds=4, decode_timeout_s=120))
    assert failure.code == "media_too_long"
    # No more than the limit (and one read) was ever written.
    assert (tmp_path / "audio.s16le").stat().st_size <= (4 + 1) * 16_000 * 2


def test_decoding_past_its_wall_time_is_stopped(tmp_path: Path) -> None:
    failure = refused(AUDIO / "jfk.flac", tmp_path, Limits(max_seconds=3600, decode_timeout_s=0.001))
    assert failure.code == "media_decode_timeout"
    assert "DECODE_TIMEOUT_S" in failure.message


def test_the_limits_come_from_the_settings() -> None:
    from events.settings import Settings

    limits = Limits.of(Settings(max_media_seconds=60, decode_timeout_s=5))
    assert limits == Limits(max_seconds=60, decode_timeout_s=5)


# -- the right audio ---------------------------------------------------------------------------


def test_the_default_flagged_track_is_chosen_and_another_can_be_asked_for(
    media_cases: Path, tmp_path: Path
) -> None:
    film = media_cases / "05_dual_audio_default_is_second.mkv"
    chosen = decode(film, tmp_path / "a.s16le", LIMITS)
    assert chosen.media is not None
    track = chosen.media.track
    assert (track.index, track.language, track.title, track.default) == (1, "eng", "Main (English)", True)
    assert chosen.media.track_count == 2
    other = decode(film, tmp_path / "b.s16le", LIMITS, requested_track=0)
    assert other.media is not None
    assert (other.media.track.index, other.media.track.language) == (0, "chi")
    failure = refused(film, tmp_path, track=2)
    assert failure.code == "audio_track_invalid"
    assert "2 audio tracks (0 to 1)" in failure.message


@pytest.mark.parametrize("layout", [["-ac", "2"], ["-ac", "6"], ["-ac", "8"]])
def test_channels_that_cancel_fall_back_to_the_strongest(tmp_path: Path, layout: list[str]) -> None:
    # The same speech on every channel but one copy inverted: a plain mean is (near) silence.
    media = tmp_path / "cancel.wav"
    count = int(layout[1])
    channels = "|".join(f"c{i}={'-1*' if i == count - 1 else ''}c0" for i in range(count))
    pan = f"pan={count}c|{channels}"
    ffmpeg("-i", str(AUDIO / "jfk.flac"), "-af", f"pan=mono|c0=c0,{pan}", "-c:a", "pcm_s16le", str(media))
    audio = decode(media, tmp_path / "a.s16le", LIMITS)
    assert audio.media is not None
    mono = audio.window(0, audio.samples)
    assert rms(mono) > 0.02, audio.media.downmix  # speech, not silence
    assert "inverted" in audio.media.downmix


def test_a_partly_inverted_channel_does_not_cancel_the_speech(tmp_path: Path) -> None:
    # R = -speech + other sound at -6 dB: no longer an exact inverse, still a cancelling mean.
    media = tmp_path / "partly.wav"
    ffmpeg(
        "-i", str(AUDIO / "librispeech-1995-1837-0001.wav"), "-i", str(AUDIO / "jfk.flac"),
        "-filter_complex",
        "[0:a]aresample=16000,pan=mono|c0=c0,asplit[s1][s2];[1:a]aresample=16000,pan=mono|c0=0.25*c0+0.25*c1[j];"
        "[s2]volume=-1[neg];[neg][j]amix=inputs=2:normalize=0[r];[s1][r]join=inputs=2:channel_layout=stereo[o]",
        "-map", "[o]", "-t", "8", "-c:a", "pcm_s16le", str(media),
    )  # fmt: skip
    speech = tmp_path / "speech.raw"
    ffmpeg(
        "-i",
        str(AUDIO / "librispeech-1995-1837-0001.wav"),
        "-t",
        "8",
        "-f",
        "s16le",
        "-ar",
        "16000",
        str(speech),
    )
    reference_speech = np.fromfile(speech, np.int16).astype(np.float64)
    audio = decode(media, tmp_path / "a.s16le", LIMITS)
    mixed = audio.window(0, audio.samples).astype(np.float64)
    n = min(len(mixed), len(reference_speech))
    correlation = np.dot(mixed[:n], reference_speech[:n]) / np.sqrt(
        np.dot(mixed[:n], mixed[:n]) * np.dot(reference_speech[:n], reference_speech[:n])
    )
    assert abs(correlation) > 0.8  # the speech is what was kept (a plain mean kept the other sound)


def speech_samples(tmp_path: Path) -> np.ndarray:
    """The LibriSpeech clip as 16 kHz mono int16, shape (samples,)."""
    source = tmp_path / "mono.raw"
    ffmpeg(
        "-i",
        str(AUDIO / "librispeech-1995-1837-0001.wav"),
        "-f",
        "s16le",
        "-ac",
        "1",
        "-ar",
        "16000",
        str(source),
    )
    return np.fromfile(source, np.int16)


def poly_wav(path: Path, mono: np.ndarray, count: int) -> Path:
    """A WAVE_FORMAT_EXTENSIBLE file of `count` channels with no channel mask, `mono` on the first."""
    frames = np.zeros((len(mono), count), np.int16)
    frames[:, 0] = mono
    block = 2 * count
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, count, 16000, 16000 * block, block, 16, 22, 16, 0)
    fmt += bytes.fromhex("0100000000001000800000aa00389b71")
    data = frames.tobytes()
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_more_channels_than_can_be_decoded_are_refused_plainly(tmp_path: Path) -> None:
    media = poly_wav(tmp_path / "poly.wav", speech_samples(tmp_path)[:16_000], 65)
    failure = refused(media, tmp_path)
    assert failure.code == "media_too_many_channels"
    assert "65 channels" in failure.message


@pytest.mark.parametrize("count", [3, 12, 24, 64])
def test_any_channel_count_without_a_layout_decodes_and_silent_channels_do_not_dilute(
    tmp_path: Path, count: int
) -> None:
    # Speech on channel 0 only, no channel mask: ffmpeg's own downmix refuses past 8 channels.
    mono = speech_samples(tmp_path)
    media = poly_wav(tmp_path / "poly.wav", mono, count)
    audio = decode(media, tmp_path / "a.s16le", LIMITS)
    assert audio.media is not None and audio.media.track.channels == count
    assert abs(audio.seconds - len(mono) / 16000) < 0.01
    # Channel 0 alone, at its own level: not a twelfth of it.
    assert rms(audio.window(0, audio.samples)) == pytest.approx(rms(mono / 32768.0), rel=0.02)


def test_a_track_that_starts_late_is_decoded_on_the_files_timeline(media_cases: Path, tmp_path: Path) -> None:
    audio = decode(media_cases / "18_audio_track_starts_at_5s.mkv", tmp_path / "a.s16le", LIMITS)
    assert audio.media is not None
    assert 4.9 <= audio.media.start_offset_s <= 5.1
    # Sample n is at n / 16000 s in the file: 5 s of silence, then the 11 s of speech.
    assert 15.9 <= audio.seconds <= 16.1
    assert rms(audio.window(0, int(4.8 * 16_000))) < 1e-3 < rms(audio.window(5 * 16_000, 16 * 16_000))
    assert not audio.media.truncated  # a video longer than its audio is not a cut-off file


def test_a_gap_in_the_audio_stays_a_gap(tmp_path: Path) -> None:
    # A recording with 5 s missing (Opus DTX, a muted tab, signal loss): the times after it stay put.
    media = tmp_path / "gap.mkv"
    ffmpeg(
        "-i", str(AUDIO / "jfk.flac"), "-af", "aselect='not(between(t,3,8))'", "-c:a", "libopus", str(media)
    )
    audio = decode(media, tmp_path / "a.s16le", LIMITS)
    assert 10.9 <= audio.seconds <= 11.1
    assert audio.media is not None and not audio.media.truncated


def test_a_header_that_inflates_to_gigabytes_is_refused_within_a_memory_budget(tmp_path: Path) -> None:
    # A MOV whose header is zlib-compressed (`cmov`) and inflates to 512 MiB: without ffmpeg's
    # -max_alloc, ffprobe allocated all of it (nested, gigabytes) from a file of a few hundred KB.
    def atom(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I4s", len(body) + 8, kind) + body

    inflated = 512 * 2**20
    packer = zlib.compressobj(9)
    compressed = b"".join(packer.compress(bytes(2**24)) for _ in range(inflated // 2**24)) + packer.flush()
    cmov = atom(b"cmov", atom(b"dcom", b"zlib") + atom(b"cmvd", struct.pack(">I", inflated) + compressed))
    bomb = tmp_path / "header.mov"
    bomb.write_bytes(atom(b"ftyp", b"qt  \0\0\0\0qt  ") + atom(b"moov", cmov) + atom(b"mdat", b""))
    assert bomb.stat().st_size < 2**20
    # In a process of its own, so the peak of its children is this probe's alone.
    script = (
        "import resource, sys\nfrom pathlib import Path\n"
        "from functions.transcriber.audio import JobFailed, probe\n"
        "try:\n    probe(Path(sys.argv[1]))\nexcept JobFailed as failure:\n    print(failure.code)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    code, peak_kib = result.stdout.split()
    assert code.startswith("media_")
    assert int(peak_kib) < 300 * 1024  # far below the 512 MiB the header asks for


def test_a_cut_off_recording_keeps_all_that_decodes_and_says_so(media_cases: Path, tmp_path: Path) -> None:
    audio = decode(media_cases / "14_android_recording_truncated.m4a", tmp_path / "a.s16le", LIMITS)
    assert audio.media is not None
    assert audio.media.truncated
    assert audio.seconds > 15.0
    whole = decode(media_cases / "01_iphone_stereo_moov_at_end.m4a", tmp_path / "b.s16le", LIMITS)
    assert whole.media is not None and not whole.media.truncated


def test_a_header_without_audio_fails_plainly(media_cases: Path, tmp_path: Path) -> None:
    failure = refused(media_cases / "03_mediarecorder_header_only.webm", tmp_path)
    assert failure.code == "media_unreadable"
    assert "EBML" not in failure.message


# -- fetching, and what the tools inherit (issue 15: confused deputy, secrets) -----------------


def test_the_fetch_reads_only_the_admitted_version_within_the_limit(
    stack: EmbeddedStack, tmp_path: Path
) -> None:
    """On the stack's SeaweedFS, which honours If-Match. Before, the model function fetched
    whatever the key held when it got to it: another version than the one admitted, of any size."""
    store = storage.client(stack.settings)
    bucket, key = stack.settings.uploads_bucket, f"fetch/{uuid.uuid4().hex}.bin"
    first = store.put_object(bucket, key, io.BytesIO(b"the version admitted"), 20)
    now = b"the version put in its place since"
    second = store.put_object(bucket, key, io.BytesIO(now), len(now))
    target = tmp_path / "media"

    def failure(media: ObjectRef, limit: int = 2**20) -> str:
        with pytest.raises(JobFailed) as failed:
            fetch(store, media, target, limit)
        assert not target.exists()  # refused before a byte is read
        return failed.value.code

    assert failure(ObjectRef(bucket=bucket, key=key, etag=first.etag)) == "media_changed"
    assert failure(ObjectRef(bucket=bucket, key=key, etag="x\r\nX-Injected: 1")) == "media_changed"
    assert (
        failure(ObjectRef(bucket=bucket, key=key, etag=second.etag), limit=len(now) - 1) == "media_too_large"
    )
    assert failure(ObjectRef(bucket=bucket, key=f"{key}.gone")) == "media_missing"
    for etag in (second.etag, f'"{second.etag}"', None):  # S3 quotes eTags; records do not
        fetch(store, ObjectRef(bucket=bucket, key=key, etag=etag), target, len(now))
        assert target.read_bytes() == now
        target.unlink()


def test_ffmpeg_and_ffprobe_get_none_of_the_functions_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ffmpeg parses hostile bytes. Before, it inherited the function's whole environment: the S3
    secret, and in the embedded stack the API key and the webhook signing secret too. Stand-ins
    named ffmpeg and ffprobe, first on PATH, write down the environment they were given, then run
    the real tools."""
    tools, dumps = tmp_path / "bin", tmp_path / "env"
    tools.mkdir()
    dumps.mkdir()
    for tool in ("ffmpeg", "ffprobe"):
        real = shutil.which(tool)
        assert real is not None
        stand_in = tools / tool
        stand_in.write_text(f'#!/bin/sh\nenv > "{dumps}/{tool}.$$"\nexec "{real}" "$@"\n')
        stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    names = ("API_KEY", "WEBHOOK_SECRET", "S3_SECRET_KEY", "RECEIVER_TOKEN", "AWS_SECRET_ACCESS_KEY")
    secrets = {name: f"{name.lower()}-{uuid.uuid4().hex}" for name in names}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)

    audio = decode(AUDIO / "librispeech-1995-1837-0001.wav", tmp_path / "audio.s16le", LIMITS)

    assert audio.samples > 0
    environments = sorted(dumps.iterdir())
    assert {path.name.split(".")[0] for path in environments} == {"ffmpeg", "ffprobe"}
    for path in environments:
        text = path.read_text()
        assert "PATH=" in text
        for name, value in secrets.items():
            assert value not in text and f"{name}=" not in text, path.name
