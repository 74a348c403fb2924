"""Transcription results written as txt, srt, vtt, tsv or json files, in openai-whisper's formats
(its default options: segment-level, no word timestamps, no line wrapping).

    write = get_writer("srt", "out/")
    write(result, "audio/talk.flac")  # -> out/talk.srt

A result is a dict like openai-whisper's ``transcribe`` returns:
``{"text": str, "language": str, "segments": [{"id", "start", "end", "text", ...}]}``, times in seconds.
Files are UTF-8 with ``\\n`` line endings. Unlike openai-whisper, json keeps non-ASCII text as is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

FORMATS = ("txt", "vtt", "srt", "tsv", "json")


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """``[HH:]MM:SS.mmm``, rounded to the millisecond; hours shown when asked or when there are any.

    >>> format_timestamp(3725.5), format_timestamp(1.0, True, ",")
    ('01:02:05.500', '00:00:01,000')
    """
    if seconds < 0:
        raise ValueError(f"negative timestamp {seconds}")
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    seconds, milliseconds = divmod(milliseconds, 1_000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{seconds:02d}{decimal_marker}{milliseconds:03d}"


def to_txt(result: dict) -> str:
    return "".join(f"{segment['text'].strip()}\n" for segment in result["segments"])


def _cues(result: dict, always_include_hours: bool, decimal_marker: str):
    for segment in result["segments"]:
        start = format_timestamp(segment["start"], always_include_hours, decimal_marker)
        end = format_timestamp(segment["end"], always_include_hours, decimal_marker)
        yield f"{start} --> {end}\n{segment['text'].strip().replace('-->', '->')}\n"  # "-->" would end the cue


def to_vtt(result: dict) -> str:
    return "WEBVTT\n\n" + "".join(f"{cue}\n" for cue in _cues(result, False, "."))


def to_srt(result: dict) -> str:
    return "".join(f"{i}\n{cue}\n" for i, cue in enumerate(_cues(result, True, ","), start=1))


def to_tsv(result: dict) -> str:
    """Start and end in integer milliseconds, so no locale can turn a decimal point into a comma."""
    rows = (f"{round(1000 * s['start'])}\t{round(1000 * s['end'])}\t{s['text'].strip().replace(chr(9), ' ')}\n"
            for s in result["segments"])
    return "start\tend\ttext\n" + "".join(rows)


def to_json(result: dict) -> str:
    return json.dumps(result, ensure_ascii=False)


RENDERERS: dict[str, Callable[[dict], str]] = {
    "txt": to_txt, "vtt": to_vtt, "srt": to_srt, "tsv": to_tsv, "json": to_json,
}


def get_writer(output_format: str, output_dir: str | Path) -> Callable[[dict, str | Path], None]:
    """A function ``write(result, audio_path)`` that writes ``<output_dir>/<audio stem>.<format>``;
    ``output_format`` is one of ``FORMATS`` or "all" (every one of them)."""
    formats = FORMATS if output_format == "all" else (output_format,)
    unknown = [f for f in formats if f not in RENDERERS]
    if unknown:
        raise ValueError(f"unknown output format {output_format!r}: expected one of {FORMATS + ('all',)}")
    output_dir = Path(output_dir)

    def write(result: dict, audio_path: str | Path) -> None:
        for extension in formats:
            path = output_dir / f"{Path(audio_path).stem}.{extension}"
            path.write_text(RENDERERS[extension](result), encoding="utf-8", newline="\n")

    return write
