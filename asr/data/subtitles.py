"""Subtitles (SubRip ``.srt``, WebVTT ``.vtt``, YouTube's SubViewer ``.sbv``, SubStation Alpha
``.ass`` / ``.ssa``, TTML ``.ttml`` / ``.dfxp``) -> timed cues, each with the line it came from.

webvtt-py parses each cue: SRT's ``00:01:02,500``, VTT's ``00:01:02.500`` or short ``01:02.500``
and SBV's ``0:01:02.500,0:01:04.000`` timestamps, cue numbers and identifiers, cue settings, and
markup (``<i>``, ``<v Speaker>``, ``<c.yellow>``, ``<00:01.500>``). It reports no line numbers and
quietly leaves out a cue it cannot parse, so this module splits the text into blocks itself (a block
ends at a blank line) and gives webvtt-py one block at a time: every cue keeps its line, and every
block that is not a usable cue comes back as a `BadCue` with its line.

SubStation Alpha files are read here: each ``Dialogue:`` line of the ``[Events]`` section is a cue,
its fields named by the section's ``Format:`` line, what is in braces dropped (override tags such
as ``{\\i1}``, notes) and ``\\N`` a line break. Events are taken in order of their start, as
players show them. An event placed on the screen (``\\pos``, ``\\move``) or drawn (``\\p1``) is
typesetting, a sign translated in the picture rather than speech: it is skipped as such.
``Comment:`` lines are not events.

TTML (W3C Timed Text; DFXP, its earlier name, as broadcasters and streaming services deliver it) is
read here too: each ``<p>`` with a time is a cue, its text with ``<br/>`` as a line break and ``<span>``
styling dropped. Times are TTML's clock times (``00:00:01.500``, ``00:00:01:12`` in frames of
``ttp:frameRate``) and offsets (``1.5s``, ``1500ms``, ``15000000t`` in ticks of ``ttp:tickRate``,
``m``, ``h``, ``f``); ``dur`` stands for ``end``, and a ``begin`` on an enclosing ``<body>`` or ``<div>``
shifts the times inside it, as TTML's parallel timing says.

What marks who speaks is left out, since nobody says it: the dash that opens each speaker's line of
a dialogue cue ("- Who?" / "- Me."), and a speaker's name in capitals before a colon ("JOHN: Where?",
as hard-of-hearing subtitles write it; a line all in capitals keeps its colon's words).

Two habits of real subtitle files are mended rather than skipped:
- A cue that starts at most ``MAX_OVERLAP`` before the previous cue ends (hand-timed files often
  overlap by a few frames) is kept, and the previous cue ends where it starts; the previous cue's
  ``note`` says so, for the importer's report.
- Rolling captions (YouTube's automatic captions, roll-up TV captions) show each line twice: once
  as it is said, then above the next line. A cue's leading lines that repeat the previous cue's
  trailing lines are left out of its text, and a cue shorter than ``MAX_SNAPSHOT`` that only
  repeats them (the 10 ms cues between two rolling ones) is skipped. In WebVTT the spec's own rule
  holds that only an empty line ends a cue, so the lone space these files put after a timing
  line does not take the cue's text from it.

    >>> cues, bad = parse_cues("1\\n00:00:01,000 --> 00:00:02,500\\n<i>Hello</i>\\nthere\\n", "srt")
    >>> cues
    [Cue(start=1.0, end=2.5, text='Hello there', line=2)]
"""

import dataclasses
import html
import io
import re
from dataclasses import dataclass
from xml.etree import ElementTree

import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError

SUBTITLE_FORMATS = ("srt", "vtt", "sbv", "ass", "ssa", "ttml", "dfxp")
# A timestamp as files write it: hours optional, one or two digits, a comma or a full stop before a
# fraction of any length (the formats want 00:00:01,500 or 00:00:01.500; _canonical makes it so).
_TIMESTAMP = re.compile(r"(?<![\d:])(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d+)(?!\d)")
_SBV_TIMING = re.compile(r"\d+:\d{2}:\d{2}\.\d{3},\d+:\d{2}:\d{2}\.\d{3}")
# WebVTT blocks that hold no cue; they are not reported.
_VTT_OTHER_BLOCKS = ("WEBVTT", "NOTE", "STYLE", "REGION")
# SubStation override tags that some SRT files carry, e.g. "{\an8}".
_ASS_TAG = re.compile(r"\{\\[^}]*\}")
# A dash that opens a line of dialogue ("- Who?" / "- Me."): it marks who speaks, nobody says it.
# A minus before a number stays.
_DIALOGUE_DASH = re.compile(r"^[-–—]\s*(?=\D)")
_MAX_LABEL_WORDS = 3  # a speaker's label in capitals before a colon: "JOHN:", "DR. SMITH:", "MAN ON RADIO:"
MAX_OVERLAP = 0.5  # seconds: a cue starting this much before the previous one ends is kept, the other trimmed
MAX_SNAPSHOT = 0.1  # seconds: a cue this short that repeats the previous one's last lines holds no speech of its own
REPEATED = "cue only repeats the previous cue's last lines (rolling captions)"
TYPESETTING = "event placed or drawn on the screen (a sign, not speech)"
# The fields of an [Events] section without a Format: line (ASS; SSA has Marked for Layer)
_ASS_FIELDS = ("layer", "start", "end", "style", "name", "marginl", "marginr", "marginv", "effect", "text")
_ASS_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)")
_ASS_PLACED = re.compile(r"\{[^}]*\\(?:pos|move|p[1-9])")
_ASS_BLOCK = re.compile(r"\{[^}]*\}")  # override tags, and the notes some files keep in braces
_XML_DECLARATION = re.compile(r"^\ufeff?\s*<\?xml[^>]*\?>")
_BR = "\0"  # where a <br/> broke a TTML paragraph, before its white space is collapsed
_P_TAG = re.compile(r"<(?:[\w.-]+:)?p[\s/>]")  # a TTML paragraph's start tag, to number its line
_TT_CLOCK = re.compile(r"(\d+):(\d{2}):(\d{2})(?:\.(\d+)|:(\d+)(?:\.\d+)?)?")  # 00:00:01.5, 00:00:01:12 (frames)
_TT_OFFSET = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|f|t)")


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float  # seconds
    text: str  # markup stripped, the cue's lines joined with spaces
    line: int  # 1-based line of the cue's timing line ("... --> ...")
    note: str | None = dataclasses.field(default=None, compare=False)  # how parsing changed it, if it did


@dataclass(frozen=True)
class BadCue:
    line: int  # 1-based
    reason: str
    span: tuple[float, float] | None = None  # (start, end) s where speech is heard without this cue's text


def parse_cues(text: str, format: str) -> tuple[list[Cue], list[BadCue]]:
    """The cues of a subtitle file, in file order, and the blocks that are not usable cues.

    Left out, each as a `BadCue`: a block with no ``-->`` timing line, a timing webvtt-py cannot
    parse, a cue without text, a cue that ends at or before its start, a cue that starts more than
    ``MAX_OVERLAP`` before the previous kept cue ends (or no later than it starts), and a short
    cue that only repeats the one before (rolling captions; the module's docstring).
    """
    if format not in SUBTITLE_FORMATS:
        raise ValueError(f"subtitle format must be one of {SUBTITLE_FORMATS}, not {format!r}")
    cues, bad, previous_lines = [], [], ()
    for parsed in _events(text, format):
        if isinstance(parsed, BadCue):
            bad.append(parsed)
            previous_lines = ()
            continue
        cue, lines = parsed
        new = lines[_repeated(previous_lines, lines):]
        previous_lines = lines
        if not new and cue.end - cue.start < MAX_SNAPSHOT:
            bad.append(BadCue(cue.line, REPEATED))
            continue
        if new and len(new) < len(lines):
            cue = dataclasses.replace(cue, text=" ".join(new))
        problem = _timing_problem(cue, cues[-1] if cues else None)
        if problem:
            bad.append(BadCue(cue.line, problem, None if cue.end <= cue.start else (cue.start, cue.end)))
            continue
        if cues and cue.start < cues[-1].end:
            before = cues[-1]
            cues[-1] = dataclasses.replace(before, end=cue.start, note=(
                f"ends at {cue.start:.3f} s, not {before.end:.3f} s: the next cue (line {cue.line}) starts then"))
        cues.append(cue)
    return cues, bad


def _events(text: str, format: str):
    if format in ("ass", "ssa"):
        return _ass_events(text)
    if format in ("ttml", "dfxp"):
        return _ttml_cues(text)
    return _block_cues(text, format)


def _block_cues(text: str, format: str):
    """Each block of a SubRip, WebVTT or SubViewer file: (its cue, its lines) or a `BadCue`."""
    for first_line, block in _blocks(text, format):
        if not (format == "vtt" and block[0].startswith(_VTT_OTHER_BLOCKS)):
            yield _parse_block(block, first_line, format)


def _ass_events(text: str) -> list:
    """Each event of a SubStation Alpha file's [Events] section: (its cue, its lines) or a `BadCue`,
    in order of start (the module's docstring)."""
    events, section, fields = [], "", _ASS_FIELDS
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line.lower()
        elif section != "[events]" or ":" not in line:
            continue
        kind, _, rest = line.partition(":")
        if kind.lower() == "format":
            fields = tuple(name.strip().lower() for name in rest.split(","))
        elif kind.lower() == "dialogue":
            events.append(_ass_event(dict(zip(fields, rest.strip().split(",", len(fields) - 1))), number))
    return sorted(events, key=lambda e: (e[0].start, e[0].line) if isinstance(e, tuple) else (-1, e.line))


def _ass_event(event: dict[str, str], number: int) -> tuple[Cue, tuple[str, ...]] | BadCue:
    times = [_ASS_TIME.fullmatch(event.get(key, "").strip()) for key in ("start", "end")]
    if not all(times) or "text" not in event:
        return BadCue(number, f"cannot read the event's times {event.get('start')!r}, {event.get('end')!r}")
    raw = event["text"]
    if _ASS_PLACED.search(raw):
        return BadCue(number, TYPESETTING)
    start, end = (int(h) * 3600 + int(m) * 60 + float(sec) for h, m, sec in (t.groups() for t in times))
    unescaped = _ASS_BLOCK.sub("", raw).replace("\\h", " ").replace("\\n", "\\N").split("\\N")
    lines = tuple(filter(None, (_said(html.unescape(part)) for part in unescaped)))
    if not lines:
        return BadCue(number, "cue without text")
    return Cue(round(start, 3), round(end, 3), " ".join(lines), line=number), lines


def _ttml_cues(text: str) -> list:
    """Each timed ``<p>`` of a TTML document: (its cue, its lines) or a `BadCue` (the module's docstring)."""
    # The declaration goes: a str has no encoding left to declare (its lines stay, for the numbers).
    text = _XML_DECLARATION.sub(lambda m: "\n" * m.group().count("\n"), text, count=1)
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        return [BadCue(e.position[0], f"not well-formed XML: {e}")]
    if _local(root.tag) != "tt":
        return [BadCue(1, f"not a TTML document: its root is <{_local(root.tag)}>, not <tt>")]
    # The parameters' namespace moved between DFXP's drafts and TTML: they are found by name alone.
    parameters = {_local(key): value for key, value in root.attrib.items()}
    clock = _TTClock(*(parameters.get(name) for name in ("frameRate", "tickRate", "frameRateMultiplier")))
    lines = iter(number for number, line in enumerate(text.splitlines(), start=1) for _ in _P_TAG.finditer(line))
    cues = []
    for p, offset in _timed_paragraphs(root, 0.0, clock):
        line = next(lines, 0)
        try:
            begin, end, duration = (clock.seconds(p.get(key)) for key in ("begin", "end", "dur"))
        except ValueError as e:
            cues.append(BadCue(line, str(e)))
            continue
        if begin is None or (end is None and duration is None):
            cues.append(BadCue(line, "cue without a begin and an end (or dur) time"))
            continue
        said = tuple(filter(None, (_said(part) for part in _ttml_text(p).split("\n"))))
        if not said:
            cues.append(BadCue(line, "cue without text"))
            continue
        start = offset + begin
        stop = offset + end if end is not None else start + duration
        cues.append((Cue(round(start, 3), round(stop, 3), " ".join(said), line=line), said))
    return cues


@dataclass(frozen=True)
class _TTClock:
    """TTML's time expressions in seconds, with the document's frame and tick rates."""

    frame_rate: str | None
    tick_rate: str | None
    multiplier: str | None

    def seconds(self, value: str | None) -> float | None:
        if value is None:
            return None
        expression = value.strip()
        clock = _TT_CLOCK.fullmatch(expression)
        if clock:
            hours, minutes, seconds, fraction, frames = clock.groups()
            total = int(hours) * 3600 + int(minutes) * 60 + int(seconds) + float("0." + (fraction or "0"))
            return total + (int(frames) / self._frames_per_second() if frames else 0.0)
        offset = _TT_OFFSET.fullmatch(expression)
        if not offset:
            raise ValueError(f"cannot read the time {value!r}")
        number, unit = float(offset.group(1)), offset.group(2)
        per_second = {"h": 1 / 3600, "m": 1 / 60, "s": 1.0, "ms": 1000.0, "f": self._frames_per_second(),
                      "t": float(self.tick_rate) if self.tick_rate else self._frames_per_second()}[unit]
        return number / per_second

    def _frames_per_second(self) -> float:
        rate = float(self.frame_rate or 30)
        if self.multiplier:
            numerator, _, denominator = self.multiplier.partition(" ")
            rate *= float(numerator) / float(denominator or 1)
        return rate


def _timed_paragraphs(element, offset: float, clock: _TTClock):
    """Each ``<p>`` under ``element`` in document order, with the begin of the elements enclosing it."""
    for child in element:
        name = _local(child.tag)
        if name == "p":
            yield child, offset
        elif name in ("body", "div"):
            try:
                begin = clock.seconds(child.get("begin")) or 0.0
            except ValueError:
                begin = 0.0
            yield from _timed_paragraphs(child, offset + begin, clock)
        elif name != "head":
            yield from _timed_paragraphs(child, offset, clock)


def _ttml_text(p) -> str:
    """A paragraph's lines, ``<br/>`` breaking them, spans' text kept; other white space (the file's own
    line breaks and indents) is one space, as TTML's default ``xml:space`` says."""
    return "\n".join(" ".join(line.split()) for line in _flat_text(p).split(_BR))


def _flat_text(element) -> str:
    parts = [element.text or ""]
    for child in element:
        parts += [_BR if _local(child.tag) == "br" else _flat_text(child), child.tail or ""]
    return "".join(parts)


def _local(tag: str) -> str:
    """An XML name without its namespace: ``{http://www.w3.org/ns/ttml}p`` -> ``p``."""
    return tag.rpartition("}")[2]


def _timing_problem(cue: Cue, previous: Cue | None) -> str | None:
    if cue.end <= cue.start:
        return "cue ends at or before its start"
    if previous and cue.start < previous.end and (previous.end - cue.start > MAX_OVERLAP
                                                  or cue.start <= previous.start):
        return "cue overlaps the previous cue"
    return None


def _repeated(previous: tuple[str, ...], lines: tuple[str, ...]) -> int:
    """How many of ``lines``' leading lines repeat ``previous``' trailing ones (rolling captions)."""
    for n in range(min(len(previous), len(lines)), 0, -1):
        if previous[-n:] == lines[:n]:
            return n
    return 0


def _blocks(text: str, format: str):
    """Yield (line number of the block's first line, the block's lines); blank lines separate blocks,
    but for a WebVTT cue's whitespace-only line right after its timing (the module's docstring)."""
    block, first_line = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not block:
                first_line = number
            block.append(line.strip())
        elif format == "vtt" and line and block and "-->" in block[-1]:
            continue
        elif block:
            yield first_line, block
            block = []
    if block:
        yield first_line, block


def _said(line: str) -> str:
    """A subtitle line without what marks who speaks: the dash that opens a line of dialogue, and a
    speaker's name in capitals before a colon ("JOHN: Where?"; not in a line all in capitals, where
    the colon may be the text's own)."""
    line = _DIALOGUE_DASH.sub("", " ".join(line.split()))
    label, colon, rest = line.partition(":")
    if colon and label.isupper() and len(label.split()) <= _MAX_LABEL_WORDS and any(c.islower() for c in rest):
        line = _DIALOGUE_DASH.sub("", rest.strip())
    return line


def _canonical(stamp: re.Match, format: str) -> str:
    """A timestamp as webvtt-py reads it: hours given, two-digit minutes and seconds, and the fraction
    as milliseconds (SRT's ``01,5`` is 1.5 s, not 1.005), with the separator of ``format``."""
    hours, minutes, seconds, fraction = stamp.groups()
    separator = "," if format == "srt" else "."
    return f"{int(hours or 0):02d}:{int(minutes):02d}:{int(seconds):02d}{separator}{(fraction + '00')[:3]}"


def _is_timing(line: str, format: str) -> bool:
    return bool(_SBV_TIMING.fullmatch(line)) if format == "sbv" else "-->" in line


def _parse_block(block: list[str], first_line: int, format: str) -> tuple[Cue, tuple[str, ...]] | BadCue:
    """The block's cue and its text lines (markup stripped), or why it is not one."""
    timing = next((i for i, line in enumerate(block[:2]) if _is_timing(line, format)), None)
    if timing is None:
        return BadCue(first_line, "no cue timing ('-->') in this block" if format != "sbv" else
                      "no cue timing ('0:00:01.000,0:00:02.000') in this block")
    line = first_line + timing
    if timing == len(block) - 1:
        return BadCue(line, "cue without text")
    original = block[timing]
    if format != "sbv":
        block = [*block[:timing], _TIMESTAMP.sub(lambda m: _canonical(m, format), original), *block[timing + 1:]]
    if format == "srt":
        # webvtt-py's SRT reader wants the cue number first; some files leave it out.
        lines = ["0", *block] if timing == 0 else block
        source = io.StringIO("\n".join(lines) + "\n")
    elif format == "sbv":
        source = io.StringIO("\n".join(block[timing:]) + "\n")
    else:
        source = io.StringIO("WEBVTT\n\n" + "\n".join(block) + "\n")
    try:
        captions = list(webvtt.from_buffer(source, format=format))
    except (MalformedCaptionError, MalformedFileError, ValueError):
        captions = []
    if len(captions) != 1:
        return BadCue(line, f"cannot read the cue timing {original!r}")
    caption = captions[0]
    lines = tuple(filter(None, (_said(html.unescape(_ASS_TAG.sub("", text))) for text in caption.text.split("\n"))))
    if not lines:
        return BadCue(line, "cue without text")
    cue = Cue(
        start=caption.start_time.in_milliseconds() / 1000,
        end=caption.end_time.in_milliseconds() / 1000,
        text=" ".join(lines),
        line=line,
    )
    return cue, lines
