"""Long recordings -> windows of at most 30 s, cut between timed segments, never through one.

A cut longer than `max_duration` (a recording with subtitle cues or Kaldi segments) becomes
windows. Each window starts at the start of a segment and holds the segments that follow it as
long as they end within `max_duration` of that start; it then runs on through the silence after
its last segment, up to the next segment's start, `max_duration` or the recording's end,
whichever comes first. So no window ends inside a segment, and every segment is in exactly one
window, at times relative to the window's start.

    recording  |--a--|  |---b---|      |--c--|   |----d----|        (a 30 s window fits a..c)
    windows    [--a--   ---b---        --c--   ][----d----        ]
                0 s                             start of d

A window's ``custom["prev_text"]`` is the text of the window before it in the same recording (None
for the first), for Whisper's ``<|startofprev|>`` prompt. Its id is ``<cut id>_<start in ms>``.

Left out, each reported as `Skipped`: a segment longer than `max_duration` (no window can hold
it; the window before it stops at its start, and the one after it gets no prev_text), and a long
cut without segments. Silence longer than a window does not become no-speech windows: a window
starts only at a segment. Overlapping segments stay whole too, but the speech of one that
overlaps the next window's first segment is heard there without its text. A cut of at most
`max_duration` passes through unchanged (no ``prev_text``).

Speech without text (``custom["unlabelled"]``, spans the importer skipped; `asr.data.importers`) is
kept out like a segment too long for a window: the window before a span ends where it starts, the
next window starts at the first segment after it (without prev_text), and a cut that holds such a
span is windowed whatever its length. The windows do not carry the key.
"""

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from asr.data.importers import Skipped

MAX_DURATION = 30.0  # seconds: Whisper's input window


class _Unlabelled(NamedTuple):
    """A span of speech without text, which no window may hold."""

    start: float
    end: float


@dataclass
class WindowReport:
    cuts: int = 0  # cuts seen
    passed: int = 0  # cuts of at most max_duration, passed through unchanged
    windowed: int = 0  # longer cuts, cut into windows
    windows: int = 0  # windows made
    skipped: list[Skipped] = field(default_factory=list)  # segments left out

    def to_dict(self) -> dict:
        """JSON-safe."""
        return asdict(self)


def window_cut(cut: Cut, max_duration: float = MAX_DURATION) -> tuple[list[Cut], list[Skipped]]:
    """`cut` as windows of at most `max_duration` s (or as it is when it fits); the segments left out."""
    unlabelled = [_Unlabelled(*span) for span in (cut.custom or {}).get("unlabelled", [])]
    if cut.duration <= max_duration and not unlabelled:
        return [cut], []
    if not cut.supervisions:
        return [], [Skipped(f"longer than {max_duration:g} s and no segments", f"cut {cut.id}")]
    segments = sorted(cut.supervisions, key=lambda s: (s.start, s.end))
    skipped = [
        Skipped(
            f"segment longer than {max_duration:g} s",
            f"cut {cut.id}, segment {s.id}",
            f"{s.start:.3f}-{s.end:.3f} s ({s.duration:.3f} s)",
        )
        for s in segments
        if s.duration > max_duration
    ]
    windows, prev_text = [], None
    items = sorted([*segments, *unlabelled], key=lambda s: (s.start, s.end))
    for group, end, after_gap in _groups(items, cut.duration, max_duration):
        start = group[0].start
        window = cut.truncate(
            offset=start, duration=end - start, keep_excessive_supervisions=False, preserve_id=True
        )
        kept = {key: value for key, value in (cut.custom or {}).items() if key != "unlabelled"}
        custom = {**kept, "prev_text": None if after_gap else prev_text}
        windows.append(fastcopy(window, id=f"{cut.id}_{round(start * 1000):08d}", custom=custom))
        prev_text = " ".join(s.text for s in group)
    return windows, skipped


def _groups(segments: list, duration: float, max_duration: float):
    """Yield (the segments of a window, its end, whether a segment was skipped just before it).

    `segments` are sorted by start, spans of speech without text among them. Such a span, or a
    segment longer than `max_duration`, belongs to no window, and the window before it ends where it
    starts: its speech has no text to go with it.
    """
    def left_out(item) -> bool:
        return isinstance(item, _Unlabelled) or item.end - item.start > max_duration

    i, after_gap = 0, False
    while i < len(segments):
        if left_out(segments[i]):
            i, after_gap = i + 1, True
            continue
        start, j = segments[i].start, i + 1
        while j < len(segments) and not left_out(segments[j]) and segments[j].end - start <= max_duration:
            j += 1
        group = segments[i:j]
        following = segments[j].start if j < len(segments) else duration
        yield group, max(max(s.end for s in group), min(following, start + max_duration, duration)), after_gap
        i, after_gap = j, False


def window_cuts(cuts: CutSet, max_duration: float = MAX_DURATION) -> tuple[CutSet, WindowReport]:
    """`window_cut` over a CutSet: the windows (and the cuts that fit as they are), and the counts."""
    report, out = WindowReport(), []
    for cut in cuts:
        windows, skipped = window_cut(cut, max_duration)
        report.cuts += 1
        if windows and windows[0] is cut:
            report.passed += 1
        else:
            report.windowed += 1
            report.windows += len(windows)
        report.skipped += skipped
        out += windows
    return CutSet.from_cuts(out), report
