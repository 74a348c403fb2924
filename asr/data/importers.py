"""Importers: a corpus as the user has it -> a CutSet in this project's schema (see `asr.data`).

    import_folder(folder)            audio files with same-stem .txt / .srt / .vtt / .sbv / .ass / .ttml transcripts
    import_tsv(path)                 a TSV or CSV of path, text, language[, translation]; Common Voice as is
    import_kaldi(folder)             a Kaldi data dir: wav.scp, text[, segments, utt2lang, utt2spk]
    import_nemo(manifest)            a NeMo (or Canary) JSON-lines manifest
    import_lhotse(manifest)          an existing lhotse manifest
    prepare_recipe(name, ...)        a lhotse recipe (lhotse.recipes.prepare_<name>), then import_lhotse

Each returns an `ImportResult`: the cuts, and an `ImportReport` that accounts for every item it saw
(a TSV row, a Kaldi utterance, a transcript file, a subtitle cue, a supervision): imported, or
skipped with a reason and where it came from ("train.tsv:14"), so that
``report.seen == report.imported + len(report.skipped)``. A bad item never stops an import; a
problem with the input as a whole (no such folder, a TSV without a text column) raises
`DataImportError`, naming the file.

Cuts: one `MonoCut` per recording, covering all of it, with all its supervisions (a subtitle file
or a Kaldi ``segments`` file gives many). `asr.data.windows` then cuts long ones into windows of at
most 30 s. Supervisions carry ``custom = {"source": ..., "weak": True}`` and ``"translation"``
where an English translation is known.

Audio: only headers are read (lhotse's ``Recording.from_file``). Missing, unreadable and 0-sample
audio is skipped. Any sample rate is kept as the file has it (`Recording.sampling_rate`);
resampling happens at load time. Multi-channel audio: the cut reads channel 0. lhotse's
``MultiCut.to_mono(mono_downmix=True)`` would decode every file into memory during the import, and
a cut holding audio in memory cannot be written to a manifest; the `Recording` still lists all
channels, so a later stage can downmix.

Times past the end of the audio: a cue or segment that starts at or after the end is skipped; one
that only ends after it is clipped to the end, and the report's ``notes`` say so.

Annotations: what a transcript marks but nobody says is left out of its text and counted in the
report (``ImportReport.annotations``): spans in square brackets (``[Music]``, Kaldi's ``[noise]``),
word-like tags in angle brackets (``<unk>``, ``<sil>``; markup such as ``<i>`` is dropped, its text
kept) and, in subtitles, whose convention it is for sounds, spans in parentheses (``(laughs)``) and
music notes. A text left empty (a cue that only says ``[Applause]``) is skipped as "only an
annotation": its time holds no words to learn. ``<unk>`` stands for a word the transcriber could not
make out; without it the text misses that word, a weak label of the kind cleaning and loss
truncation judge.

Speech without its text: where a timed item is skipped for its text (a subtitle cue that overlaps
another by more than it can be trimmed, a Kaldi segment without a usable line in ``text``, a lhotse
supervision with an unknown language), its speech is still in the audio. The cut records that span
in ``custom["unlabelled"]`` (``[[start, end], ...]`` in seconds), and `asr.data.windows` keeps it out
of every window, so that no training window hears words its text lacks. A span that is only an
annotation (``[Applause]``) holds no words and is not recorded.

Languages: see `normalize_language`. An item whose language is not one of Whisper's
(`asr.tokenizer.LANGUAGES`) is skipped with the reason "unknown language code 'xx'".
"""

import charset_normalizer
import csv
import dataclasses
import difflib
import io
import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lhotse import CutSet, MonoCut, Recording, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest
from lhotse.audio import AudioSource
from lhotse.cut import Cut, MultiCut
from lhotse.utils import fastcopy

from asr.audio import first_line as _first_line
from asr.audio import read_any_format_in_lhotse
from asr.data.subtitles import Cue, parse_cues
from asr.tokenizer import LANGUAGES

AUDIO_SUFFIXES = frozenset(
    ".wav .flac .ogg .oga .opus .mp3 .m4a .aac .wma .webm .mp4 .aif .aiff .au .sph".split()
)
TRANSCRIPT_SUFFIXES = (".txt", ".srt", ".vtt", ".sbv", ".ass", ".ssa", ".ttml", ".dfxp")
LANGUAGE_FILE = "language"  # import_folder: a file holding the language code of its folder and below
MARKDOWN_EXAMPLES = 5  # places listed per reason in ImportReport.to_markdown
MARKDOWN_NOTES = 20  # notes listed in ImportReport.to_markdown (to_dict has them all)

# Reasons an item is skipped; more come from asr.data.subtitles and from unknown language codes.
MISSING_AUDIO = "missing audio"
UNREADABLE_AUDIO = "unreadable audio"
EMPTY_AUDIO = "empty audio (0 samples)"
NO_TRANSCRIPT = "audio without a transcript"
NO_AUDIO = "transcript without audio"
BAD_UTF8 = "text is not valid UTF-8"
EMPTY_TEXT = "empty transcript"
NO_LANGUAGE = "no language"
SEVERAL_TRANSCRIPTS = "several transcripts for one audio"
DUPLICATE = "duplicate id"
AFTER_END = "starts at or after the end of the audio"
ONLY_ANNOTATION = "only an annotation, no words"

# Marked but not said (the module's docstring): every transcript's, and subtitles' own.
# Each with the space before it, which goes too where no word follows ("Yes [laughs]." -> "Yes.").
_ANNOTATIONS = re.compile(r"\s*(\[[^\[\]]*\]|</?[A-Za-z][\w-]*(?:\s[^<>]*)?>)")
_SUBTITLE_ANNOTATIONS = re.compile(r"\s*(\[[^\[\]]*\]|</?[A-Za-z][\w-]*(?:\s[^<>]*)?>|\([^()]*\)|[♪♫]+)")
_MARKUP = frozenset("b i u s em strong font span c v".split())  # tags around said words: only the tag goes


class DataImportError(ValueError):
    """The input as a whole cannot be imported (no such folder, a needed column missing, ...)."""


@dataclass(frozen=True)
class Skipped:
    """One item left out, and why."""

    reason: str  # a short phrase that skipped items are counted by, e.g. "missing audio"
    where: str  # where it came from: "data/train.tsv:14", "talks/a.srt:31", "cut a_0001"
    detail: str = ""  # the specifics, e.g. the audio backend's error message


@dataclass
class ImportReport:
    """What an import saw, imported and skipped. ``seen == imported + len(skipped)``."""

    source: str  # what was imported: a folder, a file, a recipe name
    kind: str  # "folder", "tsv", "kaldi", "nemo", "lhotse"
    seen: int = 0  # items: TSV rows, Kaldi utterances, transcript files, subtitle cues, supervisions
    imported: int = 0  # supervisions in the result
    cuts: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # changes that kept the item, e.g. a clipped cue
    annotations: Counter = field(default_factory=Counter)  # left out of the texts, lower case -> times

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.skipped.append(Skipped(reason, where, detail))

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def to_dict(self) -> dict:
        """JSON-safe."""
        # asdict would rebuild the Counter from its items, counting the pairs
        return {**asdict(self), "annotations": dict(self.annotations.most_common()),
                "skipped_by_reason": self.skipped_by_reason}

    def to_markdown(self) -> str:
        lines = [
            f"### Import of `{self.source}` ({self.kind})",
            "",
            f"{self.seen} items seen, {self.imported} imported into {self.cuts} cuts, "
            f"{len(self.skipped)} skipped.",
        ]
        if self.skipped:
            lines += ["", "| skipped because | items | where (first few) |", "|---|---:|---|"]
            for reason, count in self.skipped_by_reason.items():
                places = [s.where for s in self.skipped if s.reason == reason][:MARKDOWN_EXAMPLES]
                more = ", ..." if count > len(places) else ""
                lines.append(f"| {reason} | {count} | {', '.join(places)}{more} |")
        if self.annotations:
            common = ", ".join(f"`{a}` {n}" for a, n in self.annotations.most_common(MARKDOWN_NOTES))
            more = ", ..." if len(self.annotations) > MARKDOWN_NOTES else ""
            lines += ["", f"Annotations left out of the texts ({sum(self.annotations.values())}): {common}{more}"]
        if self.notes:
            lines += ["", "Notes:", *(f"- {note}" for note in self.notes[:MARKDOWN_NOTES])]
            if len(self.notes) > MARKDOWN_NOTES:
                lines.append(f"- ... and {len(self.notes) - MARKDOWN_NOTES} more")
        return "\n".join(lines) + "\n"


@dataclass
class ImportResult:
    cuts: CutSet
    report: ImportReport


# --- languages --------------------------------------------------------------------------------

# ISO 639-2/639-3 codes (and a few old or regional ones) of Whisper's languages.
_LANGUAGE_ALIASES = {
    "eng": "en", "zho": "zh", "chi": "zh", "cmn": "zh", "deu": "de", "ger": "de", "spa": "es",
    "rus": "ru", "kor": "ko", "fra": "fr", "fre": "fr", "jpn": "ja", "por": "pt", "tur": "tr",
    "pol": "pl", "cat": "ca", "nld": "nl", "dut": "nl", "ara": "ar", "arb": "ar", "swe": "sv",
    "ita": "it", "ind": "id", "hin": "hi", "fin": "fi", "vie": "vi", "heb": "he", "iw": "he",
    "ukr": "uk", "ell": "el", "gre": "el", "msa": "ms", "may": "ms", "zsm": "ms", "ces": "cs",
    "cze": "cs", "ron": "ro", "rum": "ro", "dan": "da", "hun": "hu", "tam": "ta", "nor": "no",
    "nob": "no", "nb": "no", "tha": "th", "urd": "ur", "hrv": "hr", "bul": "bg", "lit": "lt",
    "lat": "la", "mri": "mi", "mao": "mi", "mal": "ml", "cym": "cy", "wel": "cy", "slk": "sk",
    "slo": "sk", "tel": "te", "fas": "fa", "per": "fa", "pes": "fa", "lav": "lv", "lvs": "lv",
    "ben": "bn", "srp": "sr", "aze": "az", "slv": "sl", "kan": "kn", "est": "et", "ekk": "et",
    "mkd": "mk", "mac": "mk", "bre": "br", "eus": "eu", "baq": "eu", "isl": "is", "ice": "is",
    "hye": "hy", "arm": "hy", "nep": "ne", "npi": "ne", "mon": "mn", "khk": "mn", "bos": "bs",
    "kaz": "kk", "sqi": "sq", "alb": "sq", "swa": "sw", "swh": "sw", "glg": "gl", "mar": "mr",
    "pan": "pa", "sin": "si", "khm": "km", "sna": "sn", "yor": "yo", "som": "so", "afr": "af",
    "oci": "oc", "kat": "ka", "geo": "ka", "bel": "be", "tgk": "tg", "snd": "sd", "guj": "gu",
    "amh": "am", "yid": "yi", "lao": "lo", "uzb": "uz", "uzn": "uz", "fao": "fo", "hat": "ht",
    "pus": "ps", "tuk": "tk", "nno": "nn", "mlt": "mt", "san": "sa", "ltz": "lb", "mya": "my",
    "bur": "my", "bod": "bo", "tib": "bo", "tgl": "tl", "fil": "tl", "mlg": "mg", "asm": "as",
    "tat": "tt", "lin": "ln", "hau": "ha", "bak": "ba", "jav": "jw", "jv": "jw", "sun": "su",
    # Common Voice's zh-HK is Cantonese speech; its zh-CN and zh-TW are Mandarin (-> "zh" by prefix).
    "zh-hk": "yue",
    # Names Whisper also accepts besides those in LANGUAGES.
    "burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht", "letzeburgesch": "lb",
    "pushto": "ps", "panjabi": "pa", "moldavian": "ro", "moldovan": "ro", "sinhalese": "si",
    "castilian": "es", "mandarin": "zh",
}  # fmt: skip
_LANGUAGE_NAMES = {name: code for code, name in LANGUAGES.items()}


def normalize_language(value: str) -> str | None:
    """The `asr.tokenizer.LANGUAGES` code for a language code, locale or name; None if unknown.

    Accepted, case-insensitive: Whisper's codes ("de"), ISO 639-2/3 codes ("deu", "ger"),
    locales ("pt-BR", "es_ES"; Common Voice's "zh-HK" is Cantonese: "yue") and English names
    ("German", "Hebrew").

    >>> [normalize_language(v) for v in ("de", "pt-BR", "eng", "Hebrew", "xx")]
    ['de', 'pt', 'en', 'he', None]
    """
    key = value.strip().lower().replace("_", "-")
    for candidate in (key, key.split("-")[0]):
        if candidate in LANGUAGES:
            return candidate
        code = _LANGUAGE_ALIASES.get(candidate) or _LANGUAGE_NAMES.get(candidate)
        if code is not None:
            return code
    return None


def _unknown_language(value: str) -> str:
    return f"unknown language code '{value}'"



# --- pieces every importer uses -----------------------------------------------------------------


class _Skip(Exception):
    """Raised while importing one item to skip it. `where` overrides the item's own place."""

    def __init__(self, reason: str, detail: str = "", where: str | None = None):
        super().__init__(reason)
        self.reason, self.detail, self.where = reason, detail, where

    def record(self, report: ImportReport, where: str) -> None:
        report.skip(self.reason, self.where or where, self.detail)


def _default_language(language: str | None) -> str | None:
    """An importer's `language=` argument, checked once: an unknown code is a fatal error."""
    if language is None:
        return None
    code = normalize_language(language)
    if code is None:
        known = ", ".join(list(LANGUAGES)[:8])
        raise DataImportError(f"{_unknown_language(language)} in language=; use one of {known}, ...")
    return code


def _language(value: str | None, default: str | None) -> str:
    """The code for an item's language (a cell, a utt2lang entry), else the default; or _Skip."""
    if value is not None and _UNDECODED.search(value):
        raise _Skip(BAD_UTF8)
    if value is None or not value.strip():
        if default is None:
            raise _Skip(NO_LANGUAGE)
        return default
    code = normalize_language(value)
    if code is None:
        raise _Skip(_unknown_language(value.strip()))
    return code


def _recording_id(audio: Path, root: Path) -> str:
    """The audio's path under ``root`` (an absolute path outside it: the whole path), without its suffix."""
    return (audio.relative_to(root) if audio.is_relative_to(root) else audio).with_suffix("").as_posix()


def _probe(path: Path, recording_id: str) -> Recording:
    """The file's Recording, from its header only; _Skip if it is missing, unreadable or empty."""
    if not path.is_file():
        raise _Skip(MISSING_AUDIO, str(path))
    read_any_format_in_lhotse()  # M4A, MP4, WebM, ... through PyAV
    try:
        recording = Recording.from_file(path, recording_id=recording_id)
    except Exception as e:  # lhotse tries each audio backend and raises a summary of their errors
        raise _Skip(UNREADABLE_AUDIO, f"{path}: {_first_line(e)}")
    if recording.num_samples == 0:
        raise _Skip(EMPTY_AUDIO, str(path))
    return recording


def _probe_command(command: str, recording_id: str) -> Recording:
    """The Recording of a Kaldi pipe ("sox a.flac -t wav - |" without the "|"): runs it once."""
    run = subprocess.run(command, shell=True, capture_output=True)
    if run.returncode != 0 or not run.stdout:
        stderr = run.stderr.decode(errors="replace")
        raise _Skip(UNREADABLE_AUDIO, f"{command!r} exited with {run.returncode}: {_first_line(stderr)}")
    try:
        header = Recording.from_bytes(run.stdout, recording_id)
    except Exception as e:
        raise _Skip(UNREADABLE_AUDIO, f"{command!r}: {_first_line(e)}")
    if header.num_samples == 0:
        raise _Skip(EMPTY_AUDIO, repr(command))
    # lhotse's own Kaldi layout: it runs the command again whenever it loads the audio.
    source = AudioSource(type="command", channels=header.sources[0].channels, source=command)
    return Recording(
        id=recording_id,
        sources=[source],
        sampling_rate=header.sampling_rate,
        num_samples=header.num_samples,
        duration=header.duration,
    )


def _read_text(path: Path, notes: list[str]) -> str:
    """A transcript or subtitle file's text: UTF-8, or what its byte order mark says (UTF-16 and
    UTF-32 from Windows tools), or, where no byte of it is UTF-8's, the 8-bit code page that
    charset-normalizer finds (old subtitle files: Windows-1252, -1251, ...; a note names it). A file
    that is UTF-8 in part is broken, not another code: _Skip naming the line of its first bad byte."""
    data = path.read_bytes()
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data.decode(codec)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.start
    line = data[:bad].count(b"\n") + 1
    skip = _Skip(BAD_UTF8, f"byte {data[bad]:#04x}", where=f"{path}:{line}")
    if any(ord(c) > 0x7F and not _UNDECODED.match(c) for c in _decode_lenient(data)):
        raise skip  # a UTF-8 sequence beside the bad byte
    guess = charset_normalizer.from_bytes(data).best()
    if guess is None:
        raise skip
    notes.append(f"{path}: not UTF-8 (byte {data[bad]:#04x} on line {line}); read as {guess.encoding}")
    return str(guess)


def _decode_lenient(data: bytes) -> str:
    """Text in which undecodable bytes become lone surrogates, so that only their rows are skipped."""
    return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")


_UNDECODED = re.compile("[\udc80-\udcff]")
# Byte order marks, UTF-32's before UTF-16's, which begins the same.
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def _clean(text: str, annotations: Counter | None = None, subtitles: bool = False) -> str:
    """Whitespace (line breaks included) collapsed to single spaces and, where ``annotations`` counts
    them, annotations left out (the module's docstring; ``subtitles``: theirs too); _Skip if nothing
    is left."""
    if _UNDECODED.search(text):
        raise _Skip(BAD_UTF8)
    words = " ".join(text.split())
    if not words:
        raise _Skip(EMPTY_TEXT)
    if annotations is None:
        return words
    words, found = without_annotations(words, subtitles)
    annotations.update(found)
    if found and not any(c.isalnum() for c in words):
        raise _Skip(ONLY_ANNOTATION, repr(" ".join(text.split())))
    return words


def without_annotations(text: str, subtitles: bool = False) -> tuple[str, list[str]]:
    """``text`` without its annotations (the module's docstring), and those left out, in lower case.

        >>> without_annotations("[Music] (laughs) <i>Yes</i> ♪", subtitles=True)
        ('Yes', ['[music]', '(laughs)', '♪'])
    """
    found = []

    def replace(match: re.Match) -> str:
        span, space = match.group(1), match.group()[: match.start(1) - match.start()]
        if span.startswith("<") and span.strip("</>").split()[0].lower() in _MARKUP:
            return space
        found.append(span.lower())
        after = match.string[match.end(): match.end() + 1]
        return " " if after.isalnum() else ""

    return " ".join((_SUBTITLE_ANNOTATIONS if subtitles else _ANNOTATIONS).sub(replace, text).split()), found


def _fit(start: float, end: float, duration: float, where: str, report: ImportReport) -> tuple[float, float]:
    """A segment's (start, end) inside audio of `duration` s: clipped, with a note, where it sticks out."""
    if end <= start:
        raise _Skip("ends at or before its start", f"{start:.3f}-{end:.3f} s")
    if start >= duration:
        raise _Skip(AFTER_END, f"starts at {start:.3f} s; the audio lasts {duration:.3f} s")
    if start < 0 or end > duration:
        report.notes.append(
            f"{where}: {start:.3f}-{end:.3f} s clipped to the audio, 0.000-{duration:.3f} s"
        )
    return max(start, 0.0), min(end, duration)


def _supervision(
    id: str,
    recording: Recording,
    text: str,
    language: str,
    source: str,
    start: float = 0.0,
    end: float | None = None,
    speaker: str | None = None,
    translation: str | None = None,
) -> SupervisionSegment:
    custom = {"source": source, "weak": True}
    if translation:
        custom["translation"] = translation
    end = recording.duration if end is None else end
    return SupervisionSegment(
        id=id,
        recording_id=recording.id,
        start=start,
        duration=end - start,
        channel=0,
        text=text,
        language=language,
        speaker=speaker or None,
        custom=custom,
    )


def _cut(recording: Recording, supervisions: list[SupervisionSegment],
         unlabelled: list[tuple[float, float]] = ()) -> MonoCut:
    """All of a recording as one cut that reads channel 0, with the spans of speech left without
    text (see the module's docstring)."""
    return MonoCut(
        id=recording.id,
        start=0.0,
        duration=recording.duration,
        channel=0,
        recording=recording,
        supervisions=supervisions,
        custom=_with_unlabelled(None, unlabelled),
    )


def _with_unlabelled(custom: dict | None, spans: list[tuple[float, float]]) -> dict | None:
    """``custom`` with ``spans`` (where speech has no text) added under "unlabelled"."""
    if not spans:
        return custom
    merged = [*(custom or {}).get("unlabelled", []), *([round(a, 3), round(b, 3)] for a, b in spans)]
    return {**(custom or {}), "unlabelled": sorted(merged)}


def _unlabelled(skip: "_Skip", start: float, end: float, duration: float, spans: list[tuple[float, float]]) -> None:
    """Keep (start, end) as speech without text: an item skipped for its text or language, unless for
    holding no words."""
    heard = _heard(start, end, duration)
    if skip.reason != ONLY_ANNOTATION and heard:
        spans.append(heard)


def _heard(start: float, end: float, duration: float) -> tuple[float, float] | None:
    """(start, end) clipped to audio of ``duration`` s; None where none of it is in the audio."""
    start, end = max(start, 0.0), min(end, duration)
    return (start, end) if start < end else None


def _result(cuts: list[Cut], report: ImportReport) -> ImportResult:
    report.cuts = len(cuts)
    report.imported = sum(len(cut.supervisions) for cut in cuts)
    return ImportResult(CutSet.from_cuts(cuts), report)


# --- import_folder ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Transcript:
    path: Path
    language: str  # a code from LANGUAGES


def import_folder(folder: str | Path, language: str | None = None, source: str = "folder") -> ImportResult:
    """Audio files with transcripts of the same stem beside them, in `folder` and below.

        talk.wav  talk.txt       the transcript of the whole file (its lines joined with spaces)
        talk.wav  talk.srt       timed cues (or .vtt, .sbv, .ass, .ssa, .ttml, .dfxp): one supervision per cue
        talk.wav  talk.de.srt    the language in the name: <stem>.<lang>.txt|.srt|.vtt|.sbv|.ass|.ssa|.ttml|.dfxp
        talk.wav  talk.de.srt  talk.en.srt     a transcript and its English translation
        language                 a file holding one code: the language of its folder and below

    An untagged transcript's language comes from the nearest `language` file (from its folder up
    to `folder`), else from the `language` argument; a tag in the name wins over both. A .txt
    holds transcript only: its first line is never read as a language. When an audio file has
    two transcripts, one English and one not, the English one is the translation: a .txt
    translation goes with the whole transcript; each cue of a subtitle translation goes with the
    transcript cue that holds its midpoint (a .txt translation of subtitles is ignored, with a note).

    Recording ids are the audio's path under `folder` without its suffix ("talks/a"); a cue's
    supervision id adds its number ("talks/a-0003").

    Items: a .txt transcript; each cue of a subtitle transcript (or the whole file when it cannot
    be read); an audio file without a transcript; a transcript without audio.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataImportError(f"no such folder: {folder}")
    default = _default_language(language)
    report = ImportReport(source=str(folder), kind="folder")
    cuts = []
    for directory in sorted({p.parent for p in folder.rglob("*") if p.is_file()}):
        audio, transcripts = _pair_files(directory, _folder_language(directory, folder) or default, report)
        for stem, path in sorted(audio.items()):
            cut = _import_audio_file(path, transcripts.get(stem), folder, source, report)
            if cut is not None:
                cuts.append(cut)
    return _result(cuts, report)


def _folder_language(directory: Path, root: Path) -> str | None:
    """The code in the nearest `language` file from `directory` up to `root`; fatal if unknown."""
    for parent in (directory, *directory.parents):
        file = parent / LANGUAGE_FILE
        if file.is_file():
            value = file.read_text(encoding="utf-8", errors="replace").strip()
            if normalize_language(value) is None:
                raise DataImportError(f"{file}: {_unknown_language(value)}")
            return normalize_language(value)
        if parent == root:
            return None
    return None


def _pair_files(directory: Path, language: str | None, report: ImportReport):
    """One directory's audio files by stem, and the usable transcripts of each stem (the others reported)."""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    audio = _audio_by_stem(files, report)
    transcripts: dict[str, list[_Transcript]] = {}
    for path in files:
        if path.suffix.lower() not in TRANSCRIPT_SUFFIXES:
            continue
        stem, tag = path.stem, None
        if stem not in audio and stem.rsplit(".", 1)[0] in audio:
            stem, tag = stem.rsplit(".", 1)
        code = language if tag is None else normalize_language(tag)
        if stem not in audio:
            skip = _Skip(NO_AUDIO)
        elif code is None and tag is not None:
            skip = _Skip(_unknown_language(tag))
        elif code is None:
            skip = _Skip(NO_LANGUAGE, "give language=, a `language` file, or name it <stem>.<lang>.txt")
        else:
            transcripts.setdefault(stem, []).append(_Transcript(path, code))
            continue
        report.seen += 1
        skip.record(report, str(path))
        if stem in audio:  # its audio has a transcript, though not a usable one: no second report
            transcripts.setdefault(stem, [])
    return audio, transcripts


def _audio_by_stem(files: list[Path], report: ImportReport) -> dict[str, Path]:
    """The audio files by stem; a second one with the same stem ("a.wav", "a.flac") is reported."""
    audio = {}
    for path in files:
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        if path.stem in audio:
            report.seen += 1
            report.skip(DUPLICATE, str(path), f"{audio[path.stem].name} has the same stem")
        else:
            audio[path.stem] = path
    return audio


def _import_audio_file(
    audio: Path, transcripts: list[_Transcript] | None, root: Path, source: str, report: ImportReport
) -> MonoCut | None:
    """One audio file and its usable transcripts (None: it has none) -> its cut, or None."""
    if transcripts is None:
        report.seen += 1
        report.skip(NO_TRANSCRIPT, str(audio))
        return None
    if not transcripts:  # it had some, all reported already
        return None
    chosen = _choose_transcript(transcripts)
    if chosen is None:
        names = ", ".join(t.path.name for t in transcripts)
        for transcript in transcripts:
            report.seen += 1
            report.skip(SEVERAL_TRANSCRIPTS, str(transcript.path), names)
        return None
    transcript, translation = chosen
    try:
        recording = _probe(audio, recording_id=audio.relative_to(root).with_suffix("").as_posix())
    except _Skip as skip:
        report.seen += 1
        skip.record(report, str(audio))
        return None
    try:
        cues, unlabelled = _transcript_cues(transcript.path, recording.duration, report)
    except _Skip as skip:
        report.seen += 1
        skip.record(report, str(transcript.path))
        return None
    english = _translation_cues(translation, transcript.path, recording.duration, report)
    timed = transcript.path.suffix.lower() != ".txt"
    supervisions = []
    for cue in cues:
        report.seen += 1
        where = f"{transcript.path}:{cue.line}"
        try:
            text = _clean(cue.text, report.annotations, subtitles=timed)
        except _Skip as skip:
            skip.record(report, where)
            _unlabelled(skip, cue.start, cue.end, recording.duration, unlabelled)
            continue
        try:
            start, end = _fit(cue.start, cue.end, recording.duration, where, report)
        except _Skip as skip:
            skip.record(report, where)
            continue
        id = f"{recording.id}-{len(supervisions):04d}" if timed else recording.id
        text_en = _translation_of(cue, english)
        language = transcript.language
        supervisions.append(_supervision(id, recording, text, language, source, start, end, translation=text_en))
    return _cut(recording, supervisions, unlabelled) if supervisions else None


def _choose_transcript(transcripts: list[_Transcript]) -> tuple[_Transcript, _Transcript | None] | None:
    """(transcript, English translation or None); None when there is none or no clear choice."""
    if len(transcripts) == 1:
        return transcripts[0], None
    if len(transcripts) == 2:
        english = [t for t in transcripts if t.language == "en"]
        other = [t for t in transcripts if t.language != "en"]
        if len(english) == 1 and len(other) == 1:
            return other[0], english[0]
    return None


def _transcript_cues(path: Path, duration: float, report: ImportReport) -> tuple[list[Cue], list[tuple[float, float]]]:
    """A .txt as one cue over the whole audio, or a subtitle file's cues (bad ones reported); and
    the spans of the skipped cues whose speech is heard without text."""
    text = _read_text(path, report.notes)
    if path.suffix.lower() == ".txt":
        return [Cue(0.0, duration, _clean(text), line=1)], []
    cues, bad = parse_cues(text, path.suffix.lower()[1:])
    for cue in bad:
        report.seen += 1
        report.skip(cue.reason, f"{path}:{cue.line}")
    report.notes.extend(f"{path}:{cue.line}: {cue.note}" for cue in cues if cue.note)
    return cues, [heard for cue in bad if cue.span and (heard := _heard(*cue.span, duration))]


def _translation_cues(
    translation: _Transcript | None, transcript: Path, duration: float, report: ImportReport
) -> list[Cue]:
    """The cues of the English translation; problems with it become notes, never skipped items."""
    if translation is None:
        return []
    path = translation.path
    if path.suffix.lower() == ".txt" and transcript.suffix.lower() != ".txt":
        report.notes.append(f"{path}: a .txt translation cannot be matched to timed cues; ignored")
        return []
    try:
        text = _read_text(path, report.notes)
        if path.suffix.lower() == ".txt":
            return [Cue(0.0, duration, _clean(text, report.annotations), line=1)]
    except _Skip as skip:
        report.notes.append(f"{skip.where or path}: translation ignored: {skip.reason}")
        return []
    cues, bad = parse_cues(text, path.suffix.lower()[1:])
    report.notes.extend(f"{path}:{cue.line}: translation cue ignored: {cue.reason}" for cue in bad)
    report.notes.extend(f"{path}:{cue.line}: translation cue {cue.note}" for cue in cues if cue.note)
    said = []
    for cue in cues:
        try:
            said.append(dataclasses.replace(cue, text=_clean(cue.text, report.annotations, subtitles=True)))
        except _Skip as skip:
            report.notes.append(f"{path}:{cue.line}: translation cue ignored: {skip.reason}")
    return said


def _translation_of(cue: Cue, english: list[Cue]) -> str | None:
    """The English cues whose midpoint lies in `cue`, joined; None when there are none."""
    parts = [e.text for e in english if cue.start <= (e.start + e.end) / 2 < cue.end]
    return " ".join(parts) or None


# --- import_tsv ---------------------------------------------------------------------------------

# Column names import_tsv understands (case-insensitive), by the field they fill.
COLUMN_ALIASES = {
    "path": ("path", "audio", "file", "filename", "audio_path"),
    "text": ("text", "sentence", "transcript", "transcription"),
    "language": ("language", "lang", "locale"),
    "translation": ("translation", "translation_en", "english"),
    "speaker": ("speaker", "client_id", "speaker_id"),
}
_REQUIRED_COLUMNS = ("path", "text")


@dataclass(frozen=True)
class _Table:
    """What import_tsv knows of a table before reading its rows."""

    path: Path
    header: list[str]
    columns: dict[str, int]  # field ("path", "text", ...) -> column index
    roots: list[Path]  # audio paths are looked up under each, in order
    language: str | None  # the language= argument
    source: str


def import_tsv(
    path: str | Path, audio_root: str | Path | None = None, language: str | None = None, source: str = "tsv"
) -> ImportResult:
    """A table with a header row: one audio file per row, its transcript and language.

    Columns (by any of the names in `COLUMN_ALIASES`): path and text are needed; language, else
    `language=` (which also fills empty language cells); translation (English) and speaker
    (Common Voice's client_id) are optional. Common Voice TSVs import as they are; older ones have
    no locale column and need `language=`.

    Delimiter: a tab for .tsv (quotes are plain characters there, as Common Voice writes them), a
    comma for .csv (quoted fields as in RFC 4180), else whatever csv.Sniffer finds.

    Audio paths are relative to `audio_root`; without it, to the `clips/` folder beside the table
    (Common Voice) where the file is there, else to the table's folder. Recording ids are the
    paths under that folder without their suffix ("common_voice_de_123").
    """
    path = Path(path)
    if not path.is_file():
        raise DataImportError(f"no such file: {path}")
    default = _default_language(language)
    rows = _read_table(path)
    header = [cell.strip().lower() for cell in next(rows, (0, []))[1]]
    if audio_root is not None:
        roots = [Path(audio_root)]
    else:
        roots = [path.parent / "clips", path.parent] if (path.parent / "clips").is_dir() else [path.parent]
    table = _Table(path, header, _find_columns(header, path, default), roots, default, source)
    report = ImportReport(source=str(path), kind="tsv")
    cuts, first_line = [], {}
    for line, row in rows:
        report.seen += 1
        try:
            cuts.append(_import_row(row, line, table, first_line, report))
        except _Skip as skip:
            skip.record(report, f"{path}:{line}")
    return _result(cuts, report)


def _read_table(path: Path):
    """Yield (line number, cells) for each non-blank row, header first."""
    text = _decode_lenient(path.read_bytes())
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    elif suffix == ".csv":
        dialect = {"delimiter": ","}
    else:
        try:
            dialect = {"dialect": csv.Sniffer().sniff(text[:8192], delimiters="\t,;|")}
        except csv.Error:
            raise DataImportError(f"{path}: cannot tell its delimiter; name it .tsv or .csv")
    reader = csv.reader(io.StringIO(text, newline=""), **dialect)
    line = 1
    for cells in reader:
        if any(cell.strip() for cell in cells):
            yield line, cells
        line = reader.line_num + 1


def _find_columns(header: list[str], path: Path, default_language: str | None) -> dict[str, int]:
    """Field -> column index; DataImportError, listing the columns there are, if one is missing."""
    columns = {}
    for name, aliases in COLUMN_ALIASES.items():
        index = next((header.index(a) for a in aliases if a in header), None)
        if index is not None:
            columns[name] = index
        elif name in _REQUIRED_COLUMNS:
            raise DataImportError(
                f"{path}: no {name} column (named one of: {', '.join(aliases)}); its columns are: {header}"
            )
    if "language" not in columns and default_language is None:
        raise DataImportError(
            f"{path}: no language column (named one of: {', '.join(COLUMN_ALIASES['language'])}) "
            f"and no language= given; its columns are: {header}. Older Common Voice TSVs have no "
            f"locale column: give their language, e.g. language='de'"
        )
    return columns


def _import_row(row: list[str], line: int, table: _Table, first_line: dict[str, int],
                report: ImportReport) -> MonoCut:
    """One row -> a cut with one supervision; `first_line` (recording id -> line) finds repeats."""
    if _UNDECODED.search("".join(row)):
        raise _Skip(BAD_UTF8)
    if len(row) != len(table.header):
        raise _Skip("wrong number of fields", f"{len(row)} fields; the header has {len(table.header)}")
    cell = {name: row[index].strip() for name, index in table.columns.items()}
    text = _clean(cell["text"], report.annotations)
    language = _language(cell.get("language"), table.language)
    # An absolute path stays as it is: root / "/abs" is "/abs".
    root = next((r for r in table.roots if (r / cell["path"]).is_file()), table.roots[0])
    audio = root / cell["path"]
    recording_id = _recording_id(audio, root)
    if recording_id in first_line:
        raise _Skip(DUPLICATE, f"{recording_id} is already on line {first_line[recording_id]}")
    recording = _probe(audio, recording_id)
    first_line[recording_id] = line
    translation, found = without_annotations(" ".join(cell.get("translation", "").split()))
    report.annotations.update(found)
    supervision = _supervision(recording_id, recording, text, language, table.source, speaker=cell.get("speaker"),
                               translation=translation or None)
    return _cut(recording, [supervision])


# --- import_kaldi -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    value: str
    line: int


def import_kaldi(
    folder: str | Path, language: str | None = None, audio_root: str | Path | None = None, source: str = "kaldi"
) -> ImportResult:
    """A Kaldi data dir: wav.scp and text, with optional segments, utt2lang and utt2spk.

    wav.scp lines are `<recording> <path>` or `<recording> <command> |`; a command (sox, ffmpeg,
    ...) is run once here to read its audio's header, and lhotse runs it again whenever it loads
    the audio, both from the current directory. Relative paths are relative to `audio_root`, by
    default `folder`. Without a segments file each recording is one utterance of the same id.
    Languages come from utt2lang, else from `language=`.

    lhotse's own `lhotse.kaldi.load_kaldi_data_dir` is not used: it needs one sampling rate for
    all files, asserts instead of reporting bad lines, drops unreadable audio with only a log
    message, and reads pipes through kaldi_native_io. Its layout for pipes (an AudioSource of type
    "command") is kept, so lhotse loads them the same way.

    Items: utterances (lines of segments, else of wav.scp); text lines of no utterance; with a
    segments file, recordings that no segment uses.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataImportError(f"no such folder: {folder}")
    for name in ("wav.scp", "text"):
        if not (folder / name).is_file():
            raise DataImportError(f"{folder}: no {name} file; a Kaldi data dir needs wav.scp and text")
    default = _default_language(language)
    report = ImportReport(source=str(folder), kind="kaldi")
    files = {name: _read_kaldi_map(folder / name, report) for name in ("wav.scp", "text", "utt2lang", "utt2spk")}
    if not files["utt2lang"] and default is None:
        raise DataImportError(f"{folder}: no utt2lang file and no language= given")
    utterances = _kaldi_utterances(folder, files["wav.scp"], report)
    recordings = _KaldiRecordings(files["wav.scp"], Path(audio_root) if audio_root is not None else folder)
    supervisions: dict[str, list[SupervisionSegment]] = {}
    unlabelled: dict[str, list[tuple[float, float]]] = {}
    for utt, (recording_id, start, end, where) in utterances.items():
        report.seen += 1
        recording = language = None
        try:
            if recording_id is None:
                raise _Skip("malformed line", "expected <utt> <recording> <start> <end>")
            recording = recordings.get(recording_id)
            end = recording.duration if end is None else end
            text = _kaldi_text(files["text"], utt, folder / "text", report.annotations)
            language = _language(_kaldi_value(files["utt2lang"], utt), default)
            start, end = _fit(start, end, recording.duration, where, report)
        except _Skip as skip:
            skip.record(report, where)
            if recording is not None and language is None:  # its speech is there, without text
                _unlabelled(skip, start, end, recording.duration, unlabelled.setdefault(recording_id, []))
            continue
        speaker = _kaldi_value(files["utt2spk"], utt)
        supervision = _supervision(utt, recording, text, language, source, start, end, speaker=speaker)
        supervisions.setdefault(recording_id, []).append(supervision)
    for utt, entry in files["text"].items():
        if utt not in utterances:
            report.seen += 1
            report.skip(NO_AUDIO, f"{folder / 'text'}:{entry.line}", f"no utterance {utt!r}")
    cuts = [_cut(recordings.get(rec), sups, unlabelled.get(rec, [])) for rec, sups in supervisions.items()]
    return _result(cuts, report)


def _read_kaldi_map(path: Path, report: ImportReport) -> dict[str, _Entry]:
    """`<key> <value>` lines (no file: empty). Undecodable bytes stay, to be reported by their user."""
    if not path.is_file():
        return {}
    entries = {}
    for number, line in enumerate(_decode_lenient(path.read_bytes()).splitlines(), start=1):
        key, value = (line.split(maxsplit=1) + ["", ""])[:2]
        if key in entries:
            report.notes.append(f"{path}:{number}: {key!r} again; line {entries[key].line} is used")
        elif key:
            entries[key] = _Entry(value.strip(), number)
    return entries


def _kaldi_utterances(folder: Path, wavs: dict[str, _Entry], report: ImportReport):
    """utt -> (recording id, start s, end s or None for the end, where), from segments or wav.scp.

    The recording id is None for a malformed line of segments.
    """
    segments = folder / "segments"
    if not segments.is_file():
        return {rec: (rec, 0.0, None, f"{folder / 'wav.scp'}:{entry.line}") for rec, entry in wavs.items()}
    utterances = {}
    for utt, entry in _read_kaldi_map(segments, report).items():
        where = f"{segments}:{entry.line}"
        fields = entry.value.split()
        try:
            recording_id, start, end = fields[0], float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            utterances[utt] = (None, 0.0, None, where)
            continue
        utterances[utt] = (recording_id, start, None if end == -1 else end, where)
    used = {recording_id for recording_id, *_ in utterances.values()}
    for rec, entry in wavs.items():
        if rec not in used:
            report.seen += 1
            report.skip(NO_TRANSCRIPT, f"{folder / 'wav.scp'}:{entry.line}", "no segment of this recording")
    return utterances


class _Probed:
    """Recordings probed once each, on first use; a failed probe is kept and raised again."""

    def __init__(self):
        self.results: dict[str, Recording | _Skip] = {}

    def get(self, recording_id: str, probe: Callable[[], Recording]) -> Recording:
        if recording_id not in self.results:
            try:
                self.results[recording_id] = probe()
            except _Skip as skip:
                self.results[recording_id] = skip
        result = self.results[recording_id]
        if isinstance(result, _Skip):
            raise result
        return result


class _KaldiRecordings:
    """wav.scp's recordings, each probed once, on first use."""

    def __init__(self, wavs: dict[str, _Entry], root: Path):
        self.wavs, self.root, self.probed = wavs, root, _Probed()

    def get(self, recording_id: str) -> Recording:
        return self.probed.get(recording_id, lambda: self._probe(recording_id))

    def _probe(self, recording_id: str) -> Recording:
        if recording_id not in self.wavs:
            raise _Skip(MISSING_AUDIO, f"no recording {recording_id!r} in wav.scp")
        value = self.wavs[recording_id].value
        if _UNDECODED.search(value):
            raise _Skip(BAD_UTF8, "in wav.scp")
        if value.endswith("|"):
            return _probe_command(value[:-1].strip(), recording_id)
        return _probe(self.root / value, recording_id)


def _kaldi_value(entries: dict[str, _Entry], key: str) -> str | None:
    return entries[key].value if key in entries else None


def _kaldi_text(texts: dict[str, _Entry], utt: str, path: Path, annotations: Counter) -> str:
    if utt not in texts:
        raise _Skip(NO_TRANSCRIPT, f"no line for {utt!r} in {path.name}")
    try:
        return _clean(texts[utt].value, annotations)
    except _Skip as skip:
        raise _Skip(skip.reason, skip.detail, where=f"{path}:{texts[utt].line}")


# --- import_nemo --------------------------------------------------------------------------------

# Canary's tasknames for speech translation (asr/transcribe are transcription).
NEMO_TRANSLATION_TASKS = frozenset({"s2t_translation", "ast", "translate", "translation"})


def import_nemo(
    path: str | Path, audio_root: str | Path | None = None, language: str | None = None, source: str = "nemo"
) -> ImportResult:
    """A NeMo manifest: one JSON object a line, as NeMo's ASR and Canary recipes read it.

        {"audio_filepath": "a.wav", "duration": 2.1, "text": "hallo welt", "lang": "de"}
        {"audio_filepath": "long.wav", "offset": 12.5, "duration": 4.0, "text": "..."}
        {"audio_filepath": "b.wav", "taskname": "s2t_translation", "source_lang": "de",
         "target_lang": "en", "answer": "hello world"}                           (Canary)

    Fields: audio_filepath, relative to `audio_root` (by default the manifest's folder); the
    transcript in text (for Canary's transcription task, answer); the language in lang or
    source_lang, else `language=`; offset and duration, a segment of the file (without them, the
    whole file). A Canary translation to English (taskname s2t_translation or ast, target_lang en)
    gives its answer as the segment's English translation. Canary lists a clip once per task: the
    lines of one segment are merged into one supervision (the later line counted as "merged"), and a
    segment with a translation but no transcript trains X->English only (``custom["task"] =
    "translate"``, the text being the translation, as cleaning marks such cuts). Segments given by an
    offset into one file become one cut with all of them, as a Kaldi segments file does; the others
    are a cut each. Recording ids are the audio paths under the root without their suffix.

    Items: the manifest's lines that are not blank.
    """
    path = Path(path)
    if not path.is_file():
        raise DataImportError(f"no such file: {path}")
    default = _default_language(language)
    root = Path(audio_root) if audio_root is not None else path.parent
    report = ImportReport(source=str(path), kind="nemo")
    recordings = _Probed()
    spans: dict[tuple[str, float, float], _NemoSpan] = {}
    unlabelled: dict[str, list[tuple[float, float]]] = {}
    for number, line in enumerate(_decode_lenient(path.read_bytes()).splitlines(), start=1):
        if not line.strip():
            continue
        report.seen += 1
        where = f"{path}:{number}"
        recording = span = None
        try:
            entry = _nemo_entry(line)
            recording = _nemo_recording(entry, root, recordings)
            start = _nemo_seconds(entry, "offset", 0.0)
            span = (start, start + _nemo_seconds(entry, "duration", recording.duration - start), "offset" in entry)
            language, text, translation = _nemo_labels(entry, default, report)
            start, end = _fit(span[0], span[1], recording.duration, where, report)
        except _Skip as skip:
            skip.record(report, where)
            if span is not None and span[2]:  # a segment of a file: its speech is there, without text
                _unlabelled(skip, span[0], span[1], recording.duration, unlabelled.setdefault(recording.id, []))
            continue
        key = (recording.id, round(start, 3), round(end, 3))
        if key in spans:
            spans[key].merge(language, text, translation, where, report)
        else:
            spans[key] = _NemoSpan(recording, start, end, span[2], language, text, translation, number)
    return _result(_nemo_cuts(spans.values(), unlabelled, source), report)


@dataclass
class _NemoSpan:
    """The labels that a manifest's lines give one segment of one file."""

    recording: Recording
    start: float
    end: float
    in_file: bool  # given by an offset: a segment of a longer file
    language: str
    text: str | None
    translation: str | None
    line: int

    def merge(self, language: str, text: str | None, translation: str | None, where: str,
              report: ImportReport) -> None:
        """Another line of the same segment: its labels join this one's, or it is skipped as a clash."""
        clash = language != self.language or (text and self.text and text != self.text) or (
            translation and self.translation and translation != self.translation)
        if clash:
            report.skip("another label for a segment already given", where, f"line {self.line}")
            return
        self.text, self.translation = self.text or text, self.translation or translation
        report.skip("merged", where, f"into line {self.line}, the same segment")


def _nemo_cuts(spans, unlabelled: dict[str, list[tuple[float, float]]], source: str) -> list[MonoCut]:
    """One cut per file for the segments given by offsets, one per span for the rest."""
    cuts, in_files = [], {}
    for span in spans:
        text = span.text or span.translation
        supervision = _supervision(span.recording.id, span.recording, text, span.language, source, span.start,
                                   span.end, translation=span.translation)
        if span.in_file and span.text:
            in_files.setdefault(span.recording.id, (span.recording, []))[1].append(supervision)
            continue
        whole = (span.start, span.end) == (0.0, span.recording.duration)
        cut = MonoCut(id=span.recording.id if whole else f"{span.recording.id}_{round(span.start * 1000):08d}",
                      start=span.start, duration=span.end - span.start, channel=0, recording=span.recording,
                      supervisions=[fastcopy(supervision, start=0.0)],
                      custom=None if span.text else {"task": "translate"})
        cuts.append(cut)
    for recording_id, (recording, supervisions) in in_files.items():
        supervisions = [fastcopy(s, id=f"{recording_id}-{i:04d}") for i, s in enumerate(supervisions)]
        cuts.append(_cut(recording, supervisions, unlabelled.get(recording_id, [])))
    return cuts


def _nemo_entry(line: str) -> dict:
    if _UNDECODED.search(line):
        raise _Skip(BAD_UTF8)
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as e:
        raise _Skip("not a JSON object", str(e))
    if not isinstance(entry, dict) or not isinstance(entry.get("audio_filepath"), str):
        raise _Skip("no audio_filepath")
    return entry


def _nemo_recording(entry: dict, root: Path, recordings: _Probed) -> Recording:
    """The entry's audio, probed once per file."""
    audio = root / entry["audio_filepath"]
    recording_id = _recording_id(audio, root)
    return recordings.get(recording_id, lambda: _probe(audio, recording_id))


def _nemo_seconds(entry: dict, key: str, default: float) -> float:
    value = entry.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _Skip(f"bad {key}", repr(value))
    return float(value)


def _nemo_labels(entry: dict, default: str | None, report: ImportReport) -> tuple[str, str | None, str | None]:
    """(language, transcript, English translation) of one entry; _Skip if it has neither text."""
    language = _language(entry.get("lang") or entry.get("source_lang"), default)
    translates = (str(entry.get("taskname", "")).lower() in NEMO_TRANSLATION_TASKS
                  and str(entry.get("target_lang", "")).lower() == "en" and language != "en")
    said = entry.get("text") if translates else entry.get("text", entry.get("answer"))
    text = _clean(str(said), report.annotations) if said else None
    translation = _clean(str(entry.get("answer") or ""), report.annotations) if translates else None
    if text is None and translation is None:
        raise _Skip(EMPTY_TEXT)
    return language, text, translation


# --- import_lhotse and lhotse recipes -----------------------------------------------------------


def import_lhotse(
    manifest: CutSet | RecordingSet | str | Path,
    supervisions: SupervisionSet | str | Path | None = None,
    language: str | None = None,
    name: str | None = None,
) -> ImportResult:
    """An existing lhotse manifest: a CutSet, or a RecordingSet with its SupervisionSet.

    Objects or paths (anything `lhotse.load_manifest` reads). Each supervision needs text and a
    language (its own, normalised by `normalize_language`, else `language=`); its custom gets
    source "lhotse" and weak True (unless it says otherwise). A multi-channel cut becomes one
    cut per channel, each with the supervisions of that channel (one on several channels goes
    to the first). Mixed and padding cuts, and cuts without audio, are skipped.

    Items: supervisions; cuts without any.
    """
    cuts = _load_cuts(manifest, supervisions)
    default = _default_language(language)
    report = ImportReport(source=name or _manifest_name(manifest), kind="lhotse")
    imported = []
    for cut in cuts:
        for mono in _mono_cuts(cut, report):
            supervisions, unlabelled = _check_supervisions(mono, default, report)
            imported.append(fastcopy(mono, supervisions=supervisions, custom=_with_unlabelled(mono.custom, unlabelled)))
    return _result([cut for cut in imported if cut.supervisions], report)


def _manifest_name(manifest) -> str:
    return str(manifest) if isinstance(manifest, (str, Path)) else f"<{type(manifest).__name__}>"


def _load_cuts(manifest, supervisions) -> CutSet:
    manifest, supervisions = (
        _load_manifest(m) if isinstance(m, (str, Path)) else m for m in (manifest, supervisions)
    )
    if isinstance(manifest, CutSet):
        if supervisions is not None:
            raise DataImportError("give supervisions only with a RecordingSet; a CutSet has its own")
        return manifest
    if isinstance(manifest, RecordingSet):
        if not isinstance(supervisions, SupervisionSet):
            raise DataImportError("a RecordingSet needs its SupervisionSet (supervisions=)")
        return CutSet.from_manifests(recordings=manifest, supervisions=supervisions)
    raise DataImportError(f"expected a CutSet or a RecordingSet, got {type(manifest).__name__}")


def _load_manifest(path: str | Path):
    if not Path(path).is_file():
        raise DataImportError(f"no such file: {path}")
    try:
        return load_manifest(path)
    except Exception as e:
        raise DataImportError(f"{path}: not a lhotse manifest: {_first_line(e)}") from e


def _mono_cuts(cut: Cut, report: ImportReport) -> list[MonoCut]:
    """A cut as MonoCuts with audio; what cannot be imported is reported."""
    where = f"cut {cut.id}"
    if isinstance(cut, MultiCut):
        monos, taken = [], set()
        for mono in cut.to_mono(mono_downmix=False):
            mono = fastcopy(mono, supervisions=[s for s in mono.supervisions if s.id not in taken])
            taken.update(s.id for s in mono.supervisions)
            if mono.supervisions:  # a channel without speech is no item
                monos.append(mono)
        return [m for cut in monos or [cut.to_mono()[0]] for m in _mono_cuts(cut, report)]
    problem = None
    if not isinstance(cut, MonoCut):
        problem = _Skip(f"not a single recording ({type(cut).__name__})")
    elif not cut.has_recording:
        problem = _Skip("no audio in the cut")
    elif cut.recording.num_samples == 0:
        problem = _Skip(EMPTY_AUDIO)
    elif any(s.type == "file" and not Path(s.source).is_file() for s in cut.recording.sources):
        problem = _Skip(MISSING_AUDIO, cut.recording.sources[0].source)
    elif not cut.supervisions:
        problem = _Skip("cut without supervisions")
    if problem is None:
        return [cut]
    for supervision in cut.supervisions or [None]:
        report.seen += 1
        problem.record(report, where if supervision is None else f"{where}, supervision {supervision.id}")
    return []


def _check_supervisions(cut: MonoCut, default: str | None,
                        report: ImportReport) -> tuple[list[SupervisionSegment], list[tuple[float, float]]]:
    """The supervisions of `cut` that have text and a language, in this project's schema; and the
    spans of those skipped for their text or language, whose speech stays in the audio."""
    kept, unlabelled = [], []
    for supervision in cut.supervisions:
        report.seen += 1
        where = f"cut {cut.id}, supervision {supervision.id}"
        language = None
        try:
            text = _clean(supervision.text or "", report.annotations)
            language = _language(supervision.language, default)
            start, end = _fit(supervision.start, supervision.end, cut.duration, where, report)
        except _Skip as skip:
            skip.record(report, where)
            if language is None:  # its speech is there, without text
                _unlabelled(skip, supervision.start, supervision.end, cut.duration, unlabelled)
            continue
        custom = {**(supervision.custom or {}), "source": "lhotse"}
        custom.setdefault("weak", True)
        kept.append(
            fastcopy(supervision, start=start, duration=end - start, text=text, language=language, custom=custom)
        )
    return kept, unlabelled


def prepare_recipe(
    name: str,
    corpus_dir: str | Path,
    output_dir: str | Path | None = None,
    download: bool = False,
    language: str | None = None,
    **kwargs,
) -> dict[str, ImportResult]:
    """Run lhotse's recipe `lhotse.recipes.prepare_<name>` and import what it made, by split.

    With `download`, `lhotse.recipes.download_<name>(corpus_dir)` runs first; where it returns a
    path, that is the corpus. `kwargs` go to prepare_<name>. Splits are the keys of what the recipe
    returns, joined with "/" where it nests them (Common Voice: "de/train"); "all" if it has none.
    """
    import lhotse.recipes as recipes  # slow to import (seconds): only here

    prepare = getattr(recipes, f"prepare_{name}", None)
    if prepare is None:
        valid = sorted(n.removeprefix("prepare_") for n in dir(recipes) if n.startswith("prepare_"))
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise DataImportError(
            f"unknown lhotse recipe {name!r}; {hint}there are {len(valid)}, e.g. {', '.join(valid[:8])}, ..."
        )
    if download:
        fetch = getattr(recipes, f"download_{name}", None)
        if fetch is None:
            raise DataImportError(f"lhotse recipe {name!r} has no download_{name}: download the corpus yourself")
        downloaded = fetch(corpus_dir)
        corpus_dir = downloaded if isinstance(downloaded, (str, Path)) else corpus_dir
    try:
        manifests = prepare(corpus_dir, output_dir=output_dir, **kwargs)
    except Exception as e:  # recipes assert on their corpus's layout
        raise DataImportError(f"lhotse's prepare_{name} failed on {corpus_dir}: {e!r}") from e
    return {
        split: import_lhotse(manifest, supervisions, language=language, name=f"{name}/{split}")
        for split, manifest, supervisions in _splits(manifests)
    }


def _splits(manifests, prefix: str = ""):
    """Yield (split, CutSet or RecordingSet, SupervisionSet or None) from what a recipe returns."""
    if isinstance(manifests, (CutSet, RecordingSet)):
        yield prefix or "all", manifests, None
    elif "cuts" in manifests:
        yield prefix or "all", manifests["cuts"], None
    elif "recordings" in manifests:
        yield prefix or "all", manifests["recordings"], manifests.get("supervisions")
    else:
        for key, value in manifests.items():
            yield from _splits(value, f"{prefix}/{key}" if prefix else str(key))
