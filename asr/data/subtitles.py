"""Subtitles (SubRip ``.srt``, WebVTT ``.vtt``) -> timed cues, each with the line it came from.

webvtt-py parses each cue: SRT's ``00:01:02,500`` and VTT's ``00:01:02.500`` or short ``01:02.500``
timestamps, cue numbers and identifiers, cue settings, and markup (``<i>``, ``<v Speaker>``,
``<c.yellow>``, ``<00:01.500>``). It reports no line numbers and quietly leaves out a cue it cannot
parse, so this module splits the text into blocks itself (a block ends at a blank line) and gives
webvtt-py one block at a time: every cue keeps its line, and every block that is not a usable cue
comes back as a `BadCue` with its line.

    >>> cues, bad = parse_cues("1\\n00:00:01,000 --> 00:00:02,500\\n<i>Hello</i>\\nthere\\n", "srt")
    >>> cues
    [Cue(start=1.0, end=2.5, text='Hello there', line=2)]
"""

import html
import io
import re
from dataclasses import dataclass

import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError

SUBTITLE_FORMATS = ("srt", "vtt")
# WebVTT blocks that hold no cue; they are not reported.
_VTT_OTHER_BLOCKS = ("WEBVTT", "NOTE", "STYLE", "REGION")
# SubStation override tags that some SRT files carry, e.g. "{\an8}".
_ASS_TAG = re.compile(r"\{\\[^}]*\}")


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float  # seconds
    text: str  # markup stripped, the cue's lines joined with spaces
    line: int  # 1-based line of the cue's timing line ("... --> ...")


@dataclass(frozen=True)
class BadCue:
    line: int  # 1-based
    reason: str


def parse_cues(text: str, format: str) -> tuple[list[Cue], list[BadCue]]:
    """The cues of a subtitle file, in file order, and the blocks that are not usable cues.

    Left out, each as a `BadCue`: a block with no ``-->`` timing line, a timing webvtt-py cannot
    parse, a cue without text, a cue that ends at or before its start, and a cue that starts
    before the previous kept cue ends (overlap).
    """
    if format not in SUBTITLE_FORMATS:
        raise ValueError(f"subtitle format must be one of {SUBTITLE_FORMATS}, not {format!r}")
    cues, bad = [], []
    for first_line, block in _blocks(text):
        if format == "vtt" and block[0].startswith(_VTT_OTHER_BLOCKS):
            continue
        cue = _parse_block(block, first_line, format)
        if isinstance(cue, BadCue):
            bad.append(cue)
        elif cue.end <= cue.start:
            bad.append(BadCue(cue.line, "cue ends at or before its start"))
        elif cues and cue.start < cues[-1].end:
            bad.append(BadCue(cue.line, "cue overlaps the previous cue"))
        else:
            cues.append(cue)
    return cues, bad


def _blocks(text: str):
    """Yield (line number of the block's first line, the block's lines); blank lines separate blocks."""
    block, first_line = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not block:
                first_line = number
            block.append(line.strip())
        elif block:
            yield first_line, block
            block = []
    if block:
        yield first_line, block


def _parse_block(block: list[str], first_line: int, format: str) -> Cue | BadCue:
    timing = next((i for i, line in enumerate(block[:2]) if "-->" in line), None)
    if timing is None:
        return BadCue(first_line, "no cue timing ('-->') in this block")
    line = first_line + timing
    if timing == len(block) - 1:
        return BadCue(line, "cue without text")
    if format == "srt":
        # webvtt-py's SRT reader wants the cue number first; some files leave it out.
        lines = ["0", *block] if timing == 0 else block
        source = io.StringIO("\n".join(lines) + "\n")
    else:
        source = io.StringIO("WEBVTT\n\n" + "\n".join(block) + "\n")
    try:
        captions = list(webvtt.from_buffer(source, format=format))
    except (MalformedCaptionError, MalformedFileError, ValueError):
        captions = []
    if len(captions) != 1:
        return BadCue(line, f"cannot read the cue timing {block[timing]!r}")
    caption = captions[0]
    text = " ".join(html.unescape(_ASS_TAG.sub("", caption.text)).split())
    if not text:
        return BadCue(line, "cue without text")
    return Cue(
        start=caption.start_time.in_milliseconds() / 1000,
        end=caption.end_time.in_milliseconds() / 1000,
        text=text,
        line=line,
    )
