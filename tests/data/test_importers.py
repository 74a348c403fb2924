import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

from asr.data.importers import (
    DataImportError,
    import_folder,
    import_kaldi,
    import_lhotse,
    import_nemo,
    import_tsv,
    normalize_language,
    prepare_recipe,
    without_annotations,
)
from asr.data.subtitles import BadCue, Cue, parse_cues
from tests.test_audio import write_with_av

SR = 16000


def write_audio(path: Path, seconds: float, sr: int = SR, channels: int = 1) -> np.ndarray:
    """A sine (channel c at 220 * (c + 1) Hz) in any format soundfile writes (by the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sr)) / sr
    samples = np.stack([0.1 * np.sin(2 * np.pi * 220 * (c + 1) * t) for c in range(channels)], axis=1)
    sf.write(path, samples if channels > 1 else samples[:, 0], sr)
    return samples


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def assert_totals(report, seen: int, imported: int):
    assert report.seen == seen
    assert report.imported == imported
    assert report.seen == report.imported + len(report.skipped)
    json.dumps(report.to_dict())  # JSON-safe


def fields(item, *names: str) -> tuple:
    return tuple(getattr(item, name) for name in names)


def skipped(report, root: Path) -> set[tuple[str, str]]:
    """(reason, where, with paths relative to `root`) of each skipped item."""
    return {(s.reason, s.where.replace(f"{root}/", "")) for s in report.skipped}


# --- languages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, code",
    [
        ("de", "de"), ("DE", "de"), ("zh-CN", "zh"), ("es-ES", "es"), ("pt_BR", "pt"), ("zh-HK", "yue"),
        ("eng", "en"), ("deu", "de"), ("fra", "fr"), ("ger", "de"), ("jv", "jw"), ("Hebrew", "he"),
        ("yue", "yue"), ("haw", "haw"), ("xx", None), ("ga-IE", None), ("", None),
    ],
)  # fmt: skip
def test_normalize_language(value, code):
    assert normalize_language(value) == code


# --- subtitles ----------------------------------------------------------------------------------

SRT = """1
00:00:01,250 --> 00:00:02,500
<i>Hallo</i> &amp;
<font color="red">willkommen</font>

2
00:00:03,000 --> 00:00:02,000
verkehrt herum

3
00:00:01,900 --> 00:00:04,000
überlappt

4
00:00:04,000 --> 00:00:05,125
{\\an8}zwei Zeilen
hier

5
00:00:09,500 --> 00:00:12,000
über das Ende hinaus

6
00:00:13,000 --> 00:00:14,000
nach dem Ende

ohne Zeit
"""


def test_parse_srt():
    cues, bad = parse_cues(SRT, "srt")
    assert cues == [
        Cue(1.25, 2.5, "Hallo & willkommen", line=2),
        Cue(4.0, 5.125, "zwei Zeilen hier", line=15),
        Cue(9.5, 12.0, "über das Ende hinaus", line=20),
        Cue(13.0, 14.0, "nach dem Ende", line=24),
    ]
    assert [(b.line, b.reason) for b in bad] == [
        (7, "cue ends at or before its start"),
        (11, "cue overlaps the previous cue"),
        (27, "no cue timing ('-->') in this block"),
    ]


VTT = """WEBVTT - a header

NOTE a comment
over two lines

intro
00:01.000 --> 00:02.500 align:start position:10%
<v Roger>Hello <b>there</b>,
<c.yellow>friend</c>

01:02.000 --> 01:03.750
karaoke <01:02.500>style

00:00:05.000 --> 00:00:06.000

00:01:10.000 --> 00:01:09.000
reversed
"""


def test_parse_vtt():
    cues, bad = parse_cues(VTT, "vtt")
    assert cues == [Cue(1.0, 2.5, "Hello there, friend", line=7), Cue(62.0, 63.75, "karaoke style", line=11)]
    assert [(b.line, b.reason) for b in bad] == [(14, "cue without text"), (16, "cue ends at or before its start")]


OVERLAPPING_SRT = """1
00:00:01,000 --> 00:00:02,520
First line.

2
00:00:02,500 --> 00:00:04,000
Second line.

3
00:00:03,000 --> 00:00:05,000
Said over it.
"""


def test_a_small_overlap_trims_the_cue_before_and_a_large_one_is_skipped():
    cues, bad = parse_cues(OVERLAPPING_SRT, "srt")
    assert [(c.start, c.end, c.text) for c in cues] == [(1.0, 2.5, "First line."), (2.5, 4.0, "Second line.")]
    assert cues[0].note == "ends at 2.500 s, not 2.520 s: the next cue (line 6) starts then"
    assert cues[1].note is None
    assert [(b.line, b.reason) for b in bad] == [(10, "cue overlaps the previous cue")]  # 1 s over


# YouTube's automatic captions: each line is shown twice, as it is said and then above the next one,
# with 10 ms cues between; a lone space follows each timing line.
ROLLING_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.000 --> 00:00:02.350 align:start position:0%
 
hello<00:00:00.480><c> world</c><00:00:01.020><c> this</c><00:00:01.500><c> is</c>

00:00:02.350 --> 00:00:02.360 align:start position:0%
hello world this is
 

00:00:02.360 --> 00:00:04.700 align:start position:0%
hello world this is
a<00:00:02.900><c> test</c><00:00:03.300><c> of</c><00:00:03.800><c> captions</c>

00:00:04.700 --> 00:00:04.710 align:start position:0%
a test of captions
 

00:00:04.710 --> 00:00:06.000 align:start position:0%
a test of captions
and<00:00:05.100><c> more</c>

00:00:06.000 --> 00:00:07.000
and more
"""


def test_rolling_captions_give_each_line_once():
    cues, bad = parse_cues(ROLLING_VTT, "vtt")
    assert [(c.start, c.end, c.text) for c in cues] == [
        (0.0, 2.35, "hello world this is"),
        (2.36, 4.7, "a test of captions"),
        (4.71, 6.0, "and more"),
        (6.0, 7.0, "and more"),  # as long as a word: said again, not a snapshot
    ]
    assert [(b.line, b.reason) for b in bad] == [
        (9, "cue only repeats the previous cue's last lines (rolling captions)"),
        (17, "cue only repeats the previous cue's last lines (rolling captions)"),
    ]


def test_speaker_labels_are_left_out_but_not_from_a_line_in_capitals():
    text = ("1\n00:00:01,000 --> 00:00:03,000\nJOHN: Where are you?\n- DR. SMITH: Here.\n\n"
            "2\n00:00:04,000 --> 00:00:05,000\nWARNING: DO NOT ENTER\n\n"
            "3\n00:00:06,000 --> 00:00:07,000\nNote: it is late.\n")
    assert [c.text for c in parse_cues(text, "srt")[0]] == [
        "Where are you? Here.", "WARNING: DO NOT ENTER", "Note: it is late."]


def test_dialogue_dashes_are_left_out_but_a_minus_stays():
    cues, _ = parse_cues("1\n00:00:01,000 --> 00:00:03,000\n- Who is it?\n-It's me. \u2013 Come in.\n\n"
                         "2\n00:00:04,000 --> 00:00:05,000\n-5 degrees - and falling\n", "srt")
    assert [c.text for c in cues] == ["Who is it? It's me. \u2013 Come in.", "-5 degrees - and falling"]


@pytest.mark.parametrize(
    "timing, format, start, end",
    [
        ("00:00:01,5 --> 00:00:02,25", "srt", 1.5, 2.25),  # a short fraction is tenths, hundredths
        ("0:00:01.000 --> 0:00:02.000", "srt", 1.0, 2.0),  # one-digit hours, a full stop
        ("00:01,000-->00:02,000", "srt", 1.0, 2.0),  # no hours, no spaces
        ("00:00:01,1234 --> 00:00:02,000", "srt", 1.123, 2.0),
        ("00:00:01,000 --> 00:00:02,000", "vtt", 1.0, 2.0),  # SubRip's comma in WebVTT
    ],
)  # fmt: skip
def test_timings_as_files_write_them(timing, format, start, end):
    cues, bad = parse_cues(f"{timing}\nHallo\n", format)
    assert [(c.start, c.end) for c in cues] == [(start, end)] and bad == []


def test_parse_sbv():
    text = "0:00:01.000,0:00:02.500\nHello there\nfriend\n\n0:00:03.000\nno end\n\n0:01:03.000,0:01:04.250\nBye\n"
    cues, bad = parse_cues(text, "sbv")
    assert cues == [Cue(1.0, 2.5, "Hello there friend", line=1), Cue(63.0, 64.25, "Bye", line=8)]
    assert [(b.line, b.reason) for b in bad] == [(5, "no cue timing ('0:00:01.000,0:00:02.000') in this block")]


ASS = r"""[Script Info]
Title: a test
ScriptType: v4.00+

[V4+ Styles]
Format: Name, Fontname, Fontsize
Style: Default,Arial,20

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:05.00,0:00:06.50,Default,,0,0,0,,{\i1}Later{\i0}, with a comma,\Nand a second line
Comment: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,not shown
Dialogue: 0,0:00:01.00,0:00:02.25,Default,Ann,0,0,0,,- First.\N- Second.{a note}
Dialogue: 0,0:00:01.50,0:00:04.00,Sign,,0,0,0,,{\pos(320,50)}CAFÉ
Dialogue: 0,0:00:07.00,0:00:08.00,Default,,0,0,0,,{\p1}m 0 0 l 100 0 100 100{\p0}
Dialogue: 0,0:00:09.00,x,Default,,0,0,0,,broken
"""


def test_parse_ass():
    cues, bad = parse_cues(ASS, "ass")
    assert cues == [Cue(1.0, 2.25, "First. Second.", line=13),
                    Cue(5.0, 6.5, "Later, with a comma, and a second line", line=11)]
    assert sorted((b.line, b.reason) for b in bad) == [
        (14, "event placed or drawn on the screen (a sign, not speech)"),
        (15, "event placed or drawn on the screen (a sign, not speech)"),
        (16, "cannot read the event's times '0:00:09.00', 'x'"),
    ]


def test_folder_reads_substation_alpha(tmp_path):
    write_audio(tmp_path / "episode.wav", 10.0)
    write_text(tmp_path / "episode.en.ass", ASS)
    (cut,) = import_folder(tmp_path).cuts
    assert [(s.start, s.end, s.text) for s in cut.supervisions] == [
        (1.0, 2.25, "First. Second."), (5.0, 6.5, "Later, with a comma, and a second line")]


TTML = """<?xml version="1.0" encoding="UTF-8"?>
<tt xmlns="http://www.w3.org/ns/ttml" xmlns:ttp="http://www.w3.org/ns/ttml#parameter"
    ttp:tickRate="10000000" xml:lang="de">
  <head><styling><style xml:id="s1"/></styling></head>
  <body>
    <div>
      <p begin="00:00:01.000" end="00:00:02.500" style="s1">
        Guten <span tts:color="yellow" xmlns:tts="http://www.w3.org/ns/ttml#styling">Morgen</span>
        zusammen.</p>
      <p begin="25000000t" end="40000000t">- Wer?<br/>- Ich.</p>
      <p begin="5s" dur="1500ms">ANNA: Wo bist du?</p>
      <p begin="7s">Ohne Ende.</p>
      <p begin="8,5s" end="9s">Falsche Zeit.</p>
    </div>
    <div begin="10s"><p begin="1s" end="0.05m">Im Abschnitt.</p></div>
  </body>
</tt>
"""


def test_ttml_paragraphs_are_cues_in_every_time_expression():
    cues, bad = parse_cues(TTML, "ttml")
    assert cues == [Cue(1.0, 2.5, "Guten Morgen zusammen.", 7), Cue(2.5, 4.0, "Wer? Ich.", 10),
                    Cue(5.0, 6.5, "Wo bist du?", 11), Cue(11.0, 13.0, "Im Abschnitt.", 15)]
    assert bad == [BadCue(12, "cue without a begin and an end (or dur) time"), BadCue(13, "cannot read the time '8,5s'")]


@pytest.mark.parametrize("parameters, begin", [
    ('ttp:frameRate="25"', 1.48),  # 1 s and 12 frames of 25 a second
    ('ttp:frameRate="30" ttp:frameRateMultiplier="1000 1001"', 1.4),  # 29.97 a second
    ("", 1.4),  # 30 a second unless the document says
])  # fmt: skip
def test_dfxp_frames_count_at_the_documents_frame_rate(parameters, begin):
    text = (f'<tt xmlns="http://www.w3.org/2006/10/ttaf1" xmlns:ttp="http://www.w3.org/2006/10/ttaf1#parameter" '
            f'{parameters}><body><div><p begin="00:00:01:12" end="00:00:03:00">Frames.</p></div></body></tt>')
    (cue,), _ = parse_cues(text, "dfxp")
    assert cue.start == round(begin, 3) and cue.end == 3.0


def test_a_ttml_file_that_is_not_one_is_one_bad_cue_with_its_line():
    assert parse_cues('<tt>\n<body><p begin="1s" end="2s">a</body></tt>', "ttml") == (
        [], [BadCue(2, "not well-formed XML: mismatched tag: line 2, column 32")])
    assert parse_cues("<html><p>a</p></html>", "dfxp") == ([], [BadCue(1, "not a TTML document: its root is <html>, not <tt>")])


def test_folder_reads_ttml(tmp_path):
    write_audio(tmp_path / "news.wav", 15.0)
    write_text(tmp_path / "news.de.ttml", TTML)
    result = import_folder(tmp_path)
    (cut,) = result.cuts
    assert [(s.start, s.text, s.language) for s in cut.supervisions] == [
        (1.0, "Guten Morgen zusammen.", "de"), (2.5, "Wer? Ich.", "de"), (5.0, "Wo bist du?", "de"),
        (11.0, "Im Abschnitt.", "de")]
    assert sorted(item.where for item in result.report.skipped) == [
        f"{tmp_path / 'news.de.ttml'}:12", f"{tmp_path / 'news.de.ttml'}:13"]


def test_a_subtitle_with_a_space_after_its_timing_line_keeps_its_text_only_in_webvtt():
    text = "00:00:01.000 --> 00:00:02.000\n \nhello\n"
    assert [c.text for c in parse_cues(text, "vtt")[0]] == ["hello"]
    cues, bad = parse_cues(text, "srt")  # in SubRip a blank line with a space in it ends the cue
    assert cues == [] and [b.reason for b in bad] == ["cue without text", "no cue timing ('-->') in this block"]


@pytest.mark.parametrize(
    "text, subtitles, said, left_out",
    [
        ("[Music] (laughs) <i>Yes</i> ♪", True, "Yes", ["[music]", "(laughs)", "♪"]),
        ("HELLO <unk> WORLD [noise] <sil>", False, "HELLO WORLD", ["<unk>", "[noise]", "<sil>"]),
        ("Yes [laughs].", False, "Yes.", ["[laughs]"]),  # the space before it goes too
        ("Yes[noise]no", False, "Yes no", ["[noise]"]),  # between two words it leaves one
        ("a <b>bold</b> move", False, "a bold move", []),  # markup: the tag goes, its text stays
        ("♪ Happy birthday ♪", True, "Happy birthday", ["♪", "♪"]),  # sung words are heard
        ("The city (population 5,000) grew.", False, "The city (population 5,000) grew.", []),  # read aloud
        ("The city (population 5,000) grew.", True, "The city grew.", ["(population 5,000)"]),
    ],
)  # fmt: skip
def test_annotations_are_left_out_of_the_text(text, subtitles, said, left_out):
    assert without_annotations(text, subtitles) == (said, left_out)


# --- import_folder ------------------------------------------------------------------------------


def test_folder_transcripts_languages_and_audio(tmp_path):
    root = tmp_path / "corpus"
    write_audio(root / "a.wav", 1.0)
    write_text(root / "a.txt", "hello\nworld \n")
    write_audio(root / "b.flac", 0.5, sr=8000)
    write_text(root / "b.de.txt", "guten Tag")
    write_text(root / "sub" / "language", "fra\n")
    write_audio(root / "sub" / "c.wav", 0.25)
    write_text(root / "sub" / "c.txt", "bonjour")
    stereo = write_audio(root / "d.wav", 0.5, channels=2)
    write_text(root / "d.txt", "two channels")
    write_audio(root / "e.wav", 0.5)
    write_text(root / "e.de.txt", "ein Satz")
    write_text(root / "e.en.txt", "a sentence")

    result = import_folder(root, language="en")

    cuts = {cut.id: cut for cut in result.cuts}
    assert sorted(cuts) == ["a", "b", "d", "e", "sub/c"]
    got = {i: (c.supervisions[0].text, c.supervisions[0].language, c.duration) for i, c in cuts.items()}
    assert got == {
        "a": ("hello world", "en", 1.0),
        "b": ("guten Tag", "de", 0.5),
        "d": ("two channels", "en", 0.5),
        "e": ("ein Satz", "de", 0.5),
        "sub/c": ("bonjour", "fr", 0.25),
    }
    assert cuts["e"].supervisions[0].custom == {"source": "folder", "weak": True, "translation": "a sentence"}
    assert "translation" not in cuts["a"].supervisions[0].custom
    assert cuts["b"].sampling_rate == 8000  # kept; resampling is for load time
    # Multi-channel: the recording keeps both channels, the cut reads channel 0.
    assert cuts["d"].recording.num_channels == 2 and cuts["d"].channel == 0
    np.testing.assert_allclose(cuts["d"].load_audio()[0], stereo[:, 0], atol=1e-4)
    for cut in result.cuts:
        (supervision,) = cut.supervisions
        assert (supervision.start, supervision.duration) == (0.0, cut.duration)
    assert_totals(result.report, seen=5, imported=5)


def test_folder_bad_items_are_skipped_and_counted(tmp_path):
    root = tmp_path / "corpus"
    write_audio(root / "ok.wav", 0.5)
    write_text(root / "ok.txt", "fine")
    write_audio(root / "no_text.wav", 0.5)
    write_text(root / "no_audio.txt", "orphan")
    write_text(root / "fake.wav", "I am a text file")
    write_text(root / "fake.txt", "text of a fake")
    write_audio(root / "zero.wav", 0.0)
    write_text(root / "zero.txt", "text of nothing")
    write_audio(root / "empty.wav", 0.5)
    write_text(root / "empty.txt", " \n\n")
    write_audio(root / "broken.wav", 0.5)
    write_text(root / "broken.txt", "first line, Grüße\n".encode() + b"Gr\xfc\xdfe\n")  # UTF-8, then not
    write_audio(root / "xx.wav", 0.5)
    write_text(root / "xx.xx.txt", "?")
    write_audio(root / "two.wav", 0.5)
    write_text(root / "two.de.txt", "eins")
    write_text(root / "two.fr.txt", "un")
    write_audio(root / "dup.flac", 0.5)
    write_audio(root / "dup.wav", 0.5)
    write_text(root / "dup.txt", "which audio?")

    result = import_folder(root, language="en")

    assert [cut.id for cut in result.cuts] == ["dup", "ok"]
    assert result.cuts[0].recording.sources[0].source.endswith("dup.flac")  # the first, by name
    assert skipped(result.report, root) == {
        ("audio without a transcript", "no_text.wav"),
        ("transcript without audio", "no_audio.txt"),
        ("unreadable audio", "fake.wav"),
        ("empty audio (0 samples)", "zero.wav"),
        ("empty transcript", "empty.txt"),
        ("text is not valid UTF-8", "broken.txt:2"),
        ("unknown language code 'xx'", "xx.xx.txt"),
        ("several transcripts for one audio", "two.de.txt"),
        ("several transcripts for one audio", "two.fr.txt"),
        ("duplicate id", "dup.wav"),
    }
    assert result.report.skipped_by_reason["several transcripts for one audio"] == 2
    assert_totals(result.report, seen=12, imported=2)
    markdown = result.report.to_markdown()
    assert "| unreadable audio | 1 |" in markdown and "12 items seen, 2 imported" in markdown


def test_folder_needs_a_language_and_a_folder(tmp_path):
    write_audio(tmp_path / "a.wav", 0.5)
    write_text(tmp_path / "a.txt", "hello")
    result = import_folder(tmp_path)
    assert len(result.cuts) == 0
    assert [s.reason for s in result.report.skipped] == ["no language"]
    with pytest.raises(DataImportError, match="no such folder: .*missing"):
        import_folder(tmp_path / "missing")
    with pytest.raises(DataImportError, match="unknown language code 'klingon'"):
        import_folder(tmp_path, language="klingon")


def test_folder_subtitles_with_translation(tmp_path):
    write_audio(tmp_path / "talk.wav", 10.0)
    write_text(tmp_path / "talk.de.srt", SRT)
    english = """1
00:00:01,000 --> 00:00:01,800
Hello &

2
00:00:01,900 --> 00:00:02,600
welcome

3
00:00:04,100 --> 00:00:05,000
two lines here
"""
    write_text(tmp_path / "talk.en.srt", english)

    result = import_folder(tmp_path)

    (cut,) = result.cuts
    assert cut.id == "talk" and cut.duration == 10.0
    got = [(s.id, s.start, s.end, s.text, s.language, s.custom.get("translation")) for s in cut.supervisions]
    assert got == [
        ("talk-0000", 1.25, 2.5, "Hallo & willkommen", "de", "Hello & welcome"),
        ("talk-0001", 4.0, 5.125, "zwei Zeilen hier", "de", "two lines here"),
        ("talk-0002", 9.5, 10.0, "über das Ende hinaus", "de", None),  # clipped to the audio
    ]
    assert cut.custom == {"unlabelled": [[1.9, 4.0]]}  # the overlapping cue's speech, without its text
    assert skipped(result.report, tmp_path) == {
        ("cue ends at or before its start", "talk.de.srt:7"),
        ("cue overlaps the previous cue", "talk.de.srt:11"),
        ("starts at or after the end of the audio", "talk.de.srt:24"),
        ("no cue timing ('-->') in this block", "talk.de.srt:27"),
    }
    (note,) = result.report.notes
    assert "talk.de.srt:20" in note and "clipped" in note
    assert_totals(result.report, seen=7, imported=3)


def test_folder_notes_the_cues_it_trimmed(tmp_path):
    write_audio(tmp_path / "talk.wav", 6.0)
    write_text(tmp_path / "talk.en.srt", OVERLAPPING_SRT)
    result = import_folder(tmp_path)
    (cut,) = result.cuts
    assert [(s.start, s.end) for s in cut.supervisions] == [(1.0, 2.5), (2.5, 4.0)]
    assert result.report.notes == [
        f"{tmp_path / 'talk.en.srt'}:2: ends at 2.500 s, not 2.520 s: the next cue (line 6) starts then"]
    assert skipped(result.report, tmp_path) == {("cue overlaps the previous cue", "talk.en.srt:10")}
    assert_totals(result.report, seen=3, imported=2)


def test_folder_counts_the_annotations_and_skips_a_cue_of_nothing_else(tmp_path):
    write_audio(tmp_path / "show.wav", 6.0)
    write_text(tmp_path / "show.en.srt", """1
00:00:00,500 --> 00:00:01,500
[MUSIC PLAYING]

2
00:00:02,000 --> 00:00:03,000
(laughs) Yes, <i>of course</i>.

3
00:00:04,000 --> 00:00:05,000
♪ la la ♪
""")
    result = import_folder(tmp_path)
    (cut,) = result.cuts
    assert [(s.start, s.text) for s in cut.supervisions] == [(2.0, "Yes, of course."), (4.0, "la la")]
    assert cut.custom is None  # the music cue's time holds no words to keep out of the windows
    assert skipped(result.report, tmp_path) == {("only an annotation, no words", "show.en.srt:2")}
    assert result.report.annotations == {"[music playing]": 1, "(laughs)": 1, "♪": 2}
    assert result.report.to_dict()["annotations"] == {"♪": 2, "[music playing]": 1, "(laughs)": 1}
    assert "Annotations left out of the texts (4): `♪` 2, `[music playing]` 1, `(laughs)` 1" in (
        result.report.to_markdown())
    assert_totals(result.report, seen=3, imported=2)


def test_kaldi_and_tables_leave_out_brackets_but_not_parentheses(tmp_path):
    write_audio(tmp_path / "wav" / "r1.wav", 1.0)
    write_audio(tmp_path / "wav" / "r2.wav", 1.0)
    data = tmp_path / "data"
    write_text(data / "wav.scp", f"r1 {tmp_path}/wav/r1.wav\nr2 {tmp_path}/wav/r2.wav\n")
    write_text(data / "text", "r1 HELLO <unk> WORLD [noise]\nr2 [laughter]\n")
    result = import_kaldi(data, language="en")
    assert [c.supervisions[0].text for c in result.cuts] == ["HELLO WORLD"]
    assert skipped(result.report, data) == {("only an annotation, no words", "text:2")}
    assert result.report.annotations == {"<unk>": 1, "[noise]": 1, "[laughter]": 1}

    table = write_text(tmp_path / "table.tsv", "path\ttext\nwav/r1.wav\tThe city (population 5,000) grew [sic].\n")
    (cut,) = import_tsv(table, language="en").cuts
    assert cut.supervisions[0].text == "The city (population 5,000) grew."


def test_folder_reads_subtitles_in_other_encodings(tmp_path):
    text = "1\n00:00:01,000 --> 00:00:02,000\nGrüße aus München, schöne Straße.\n\n" \
           "2\n00:00:03,000 --> 00:00:04,000\nÄrger über Öl.\n"
    for name, encoding in (("old", "cp1252"), ("windows", "utf-16")):
        write_audio(tmp_path / f"{name}.wav", 5.0)
        write_text(tmp_path / f"{name}.de.srt", text.encode(encoding))
    result = import_folder(tmp_path)
    assert [[s.text for s in cut.supervisions] for cut in result.cuts] == [
        ["Grüße aus München, schöne Straße.", "Ärger über Öl."]] * 2
    (note,) = result.report.notes  # the byte order mark says UTF-16; the code page is a guess
    assert note.startswith(f"{tmp_path / 'old.de.srt'}: not UTF-8 (byte 0xfc on line 3); read as cp125")


def test_folder_vtt(tmp_path):
    write_audio(tmp_path / "clip.ogg", 70.0, sr=8000)
    write_text(tmp_path / "clip.vtt", VTT)
    result = import_folder(tmp_path, language="en")
    (cut,) = result.cuts
    assert [(s.start, s.end, s.text) for s in cut.supervisions] == [
        (1.0, 2.5, "Hello there, friend"),
        (62.0, 63.75, "karaoke style"),
    ]
    assert skipped(result.report, tmp_path) == {
        ("cue without text", "clip.vtt:14"),
        ("cue ends at or before its start", "clip.vtt:16"),
    }
    assert_totals(result.report, seen=4, imported=2)


# --- import_tsv ---------------------------------------------------------------------------------

CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment\n"


def cv_row(client: str, path: str, sentence: str, locale: str) -> str:
    return f"{client}\t{path}\t{sentence}\t2\t0\tthirties\tfemale\t\t{locale}\t\n"


def test_tsv_common_voice_layout(tmp_path):
    cv = tmp_path / "cv-corpus" / "de"
    write_audio(cv / "clips" / "common_voice_de_1.mp3", 1.5)  # as Common Voice ships them
    write_audio(cv / "clips" / "common_voice_de_2.wav", 0.75)
    write_audio(cv / "clips" / "common_voice_de_4.wav", 0.5)
    write_audio(cv / "clips" / "common_voice_de_5.wav", 0.5)
    write_audio(cv / "clips" / "common_voice_de_6.wav", 0.5)
    tsv = cv / "train.tsv"
    write_text(
        tsv,
        CV_HEADER.encode()
        + cv_row("spk1", "common_voice_de_1.mp3", 'Er sagte "Hallo".', "de").encode()
        + cv_row("spk2", "common_voice_de_2.wav", "Guten Morgen", "de-DE").encode()
        + cv_row("spk3", "common_voice_de_3.wav", "Die Datei fehlt", "de").encode()
        + b"\n"  # a blank line is no row
        + cv_row("spk4", "common_voice_de_4.wav", "", "de").encode()
        + cv_row("spk5", "common_voice_de_5.wav", "Sprache?", "xx-YY").encode()
        + cv_row("spk6", "common_voice_de_6.wav", "Gr\udcfc\udcdfe", "de").encode("utf-8", "surrogateescape")
        + cv_row("spk1", "common_voice_de_1.mp3", "noch einmal", "de").encode(),
    )

    result = import_tsv(tsv)

    got = [(c.id, c.duration, *fields(c.supervisions[0], "text", "language", "speaker")) for c in result.cuts]
    assert got == [
        ("common_voice_de_1", 1.5, 'Er sagte "Hallo".', "de", "spk1"),
        ("common_voice_de_2", 0.75, "Guten Morgen", "de", "spk2"),
    ]
    assert result.cuts[0].supervisions[0].custom == {"source": "tsv", "weak": True}
    assert skipped(result.report, tmp_path) == {
        ("missing audio", "cv-corpus/de/train.tsv:4"),
        ("empty transcript", "cv-corpus/de/train.tsv:6"),
        ("unknown language code 'xx-YY'", "cv-corpus/de/train.tsv:7"),
        ("text is not valid UTF-8", "cv-corpus/de/train.tsv:8"),
        ("duplicate id", "cv-corpus/de/train.tsv:9"),
    }
    assert_totals(result.report, seen=7, imported=2)


def test_tsv_old_common_voice_needs_language(tmp_path):
    write_audio(tmp_path / "clips" / "a.wav", 0.5)
    write_audio(tmp_path / "extra" / "b.wav", 0.5)  # beside the table, not in clips/
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\n"
    rows = "spk\ta.wav\tHola\t2\t0\t\t\t\nspk\textra/b.wav\tAdiós\t2\t0\t\t\t\n"
    tsv = write_text(tmp_path / "validated.tsv", header + rows)
    with pytest.raises(DataImportError, match=r"validated.tsv: no language column.*language="):
        import_tsv(tsv)
    result = import_tsv(tsv, language="es-ES")
    got = [(c.id, c.supervisions[0].text, c.supervisions[0].language) for c in result.cuts]
    assert got == [("a", "Hola", "es"), ("extra/b", "Adiós", "es")]


def test_csv_aliases_quotes_and_translation(tmp_path):
    write_audio(tmp_path / "audio" / "x.wav", 0.5)
    write_audio(tmp_path / "audio" / "y.flac", 0.25, sr=22050)
    table = write_text(
        tmp_path / "list.csv",
        'Audio,Transcript,Lang,Translation\n'
        'audio/x.wav,"Bonjour, le monde",fra,"Hello, world"\n'
        'audio/y.flac,"sur deux\nlignes",fr,\n'
        'audio/z.wav,absent,fr,\n',
    )
    result = import_tsv(table)
    sups = [c.supervisions[0] for c in result.cuts]
    got = [(s.recording_id, s.text, s.language, s.custom.get("translation")) for s in sups]
    assert got == [
        ("audio/x", "Bonjour, le monde", "fr", "Hello, world"),
        ("audio/y", "sur deux lignes", "fr", None),
    ]
    assert result.cuts[1].sampling_rate == 22050
    assert skipped(result.report, tmp_path) == {("missing audio", "list.csv:5")}  # line 5: row 3 spans lines 3-4
    assert_totals(result.report, seen=3, imported=2)


def test_table_delimiter_is_sniffed(tmp_path):
    write_audio(tmp_path / "a.wav", 0.5)
    table = write_text(tmp_path / "list.txt", "filename;sentence;locale\na.wav;eins, zwei;de\n")
    (cut,) = import_tsv(table).cuts
    assert (cut.id, cut.supervisions[0].text, cut.supervisions[0].language) == ("a", "eins, zwei", "de")


def test_tsv_names_missing_columns(tmp_path):
    table = write_text(tmp_path / "t.tsv", "file\tlang\n")
    with pytest.raises(DataImportError, match=r"t.tsv: no text column .*its columns are: \['file', 'lang'\]"):
        import_tsv(table)
    with pytest.raises(DataImportError, match="no such file"):
        import_tsv(tmp_path / "none.tsv")


# --- import_kaldi -------------------------------------------------------------------------------


def test_kaldi_without_segments_with_a_pipe(tmp_path):
    write_audio(tmp_path / "wav" / "r1.wav", 1.0)
    write_audio(tmp_path / "wav" / "r2.wav", 0.5, sr=8000)
    data = tmp_path / "data" / "train"
    write_text(data / "wav.scp", f"r1 ../../wav/r1.wav\nr2 cat {tmp_path}/wav/r2.wav |\nr3 false |\n")
    write_text(data / "text", "r1 hello world\nr2 good  morning\nr3 broken pipe\n")
    write_text(data / "utt2spk", "r1 alice\nr2 bob\nr3 carol\n")

    result = import_kaldi(data, language="eng")

    got = [(c.id, c.duration, c.sampling_rate, *fields(c.supervisions[0], "text", "speaker")) for c in result.cuts]
    assert got == [("r1", 1.0, 16000, "hello world", "alice"), ("r2", 0.5, 8000, "good morning", "bob")]
    assert all(c.supervisions[0].language == "en" for c in result.cuts)
    pipe = result.cuts[1].recording.sources[0]
    assert (pipe.type, pipe.source) == ("command", f"cat {tmp_path}/wav/r2.wav")
    assert result.cuts[1].load_audio().shape == (1, 4000)
    assert skipped(result.report, data) == {("unreadable audio", "wav.scp:3")}
    assert_totals(result.report, seen=3, imported=2)


def test_kaldi_with_segments_and_utt2lang(tmp_path):
    write_audio(tmp_path / "long.wav", 10.0)
    write_audio(tmp_path / "unused.wav", 1.0)
    write_text(tmp_path / "wav.scp", "long long.wav\nunused unused.wav\n")
    write_text(
        tmp_path / "segments",
        "u1 long 0.5 2.25\n"
        "u2 long 3 4.5\n"
        "u3 long 5 4\n"
        "u4 long 9.5 -1\n"
        "u5 long 9.75 11\n"
        "u6 nowhere 0 1\n"
        "u7 long 1 x\n"
        "u8 long 6 7\n",
    )
    texts = "u1 eins\nu2 two\nu3 drei\nu4 vier\nu5 fünf\nu6 sechs\nu7 sieben\nu9 neun\n"
    write_text(tmp_path / "text", texts.encode() + b"u8 acht in Latin-1: \xe4\n")
    write_text(tmp_path / "utt2lang", "u1 de\nu2 English\nu3 de\nu4 de\nu5 de\nu6 de\nu7 de\nu8 de\n")

    result = import_kaldi(tmp_path)

    (cut,) = result.cuts
    got = [(s.id, s.start, s.end, s.text, s.language) for s in cut.supervisions]
    assert got == [
        ("u1", 0.5, 2.25, "eins", "de"),
        ("u2", 3.0, 4.5, "two", "en"),
        ("u4", 9.5, 10.0, "vier", "de"),
        ("u5", 9.75, 10.0, "fünf", "de"),  # clipped, with a note
    ]
    assert cut.custom == {"unlabelled": [[6.0, 7.0]]}  # u8's speech: its text is not UTF-8
    assert skipped(result.report, tmp_path) == {
        ("ends at or before its start", "segments:3"),
        ("missing audio", "segments:6"),
        ("malformed line", "segments:7"),
        ("text is not valid UTF-8", "text:9"),
        ("audio without a transcript", "wav.scp:2"),
        ("transcript without audio", "text:8"),
    }
    assert len(result.report.notes) == 1 and "segments:5" in result.report.notes[0]
    assert_totals(result.report, seen=10, imported=4)


def test_kaldi_needs_wav_scp_text_and_a_language(tmp_path):
    with pytest.raises(DataImportError, match="no wav.scp"):
        import_kaldi(tmp_path)
    write_text(tmp_path / "wav.scp", "a a.wav\n")
    write_text(tmp_path / "text", "a hi\n")
    with pytest.raises(DataImportError, match="no utt2lang file and no language="):
        import_kaldi(tmp_path)


# --- import_nemo --------------------------------------------------------------------------------


def test_nemo_manifest_with_segments_canary_translations_and_bad_lines(tmp_path):
    write_audio(tmp_path / "audio" / "a.wav", 2.0)
    write_audio(tmp_path / "audio" / "long.wav", 40.0)
    write_audio(tmp_path / "audio" / "b.wav", 1.5)
    lines = [
        {"audio_filepath": "audio/a.wav", "duration": 2.0, "text": "hallo welt", "lang": "de"},
        {"audio_filepath": "audio/long.wav", "offset": 1.0, "duration": 3.0, "text": "eins [noise]", "lang": "de"},
        {"audio_filepath": "audio/long.wav", "offset": 20.0, "duration": 4.0, "text": "zwei", "lang": "de"},
        {"audio_filepath": "audio/long.wav", "offset": 30.0, "duration": 2.0, "text": "drei", "lang": "xx"},
        # Canary: one clip twice, transcribed and translated; a clip translated only
        {"audio_filepath": "audio/b.wav", "taskname": "asr", "source_lang": "de", "target_lang": "de",
         "answer": "guten morgen"},
        {"audio_filepath": "audio/b.wav", "taskname": "s2t_translation", "source_lang": "de", "target_lang": "en",
         "answer": "good morning"},
        {"audio_filepath": "audio/a.wav", "offset": 0.5, "duration": 1.0, "taskname": "ast", "source_lang": "de",
         "target_lang": "en", "answer": "world"},
        {"audio_filepath": "audio/missing.wav", "text": "nichts", "lang": "de"},
        {"audio_filepath": "audio/a.wav", "duration": -1, "text": "x", "lang": "de"},
    ]
    manifest = tmp_path / "train.json"
    write_text(manifest, "\n".join(json.dumps(line) for line in lines) + "\n\n{not json\n")

    result = import_nemo(manifest)

    got = {c.id: (c.start, c.duration, c.custom, [(s.start, s.end, s.text, s.language, s.custom.get("translation"))
                                                  for s in c.supervisions]) for c in result.cuts}
    assert got == {
        "audio/a": (0.0, 2.0, None, [(0.0, 2.0, "hallo welt", "de", None)]),
        "audio/b": (0.0, 1.5, None, [(0.0, 1.5, "guten morgen", "de", "good morning")]),
        "audio/a_00000500": (0.5, 1.0, {"task": "translate"}, [(0.0, 1.0, "world", "de", "world")]),
        "audio/long": (0.0, 40.0, {"unlabelled": [[30.0, 32.0]]},  # the Xx line's speech, without text
                       [(1.0, 4.0, "eins", "de", None), (20.0, 24.0, "zwei", "de", None)]),
    }
    assert skipped(result.report, tmp_path) == {
        ("unknown language code 'xx'", "train.json:4"),
        ("merged", "train.json:6"),
        ("missing audio", "train.json:8"),
        ("bad duration", "train.json:9"),
        ("not a JSON object", "train.json:11"),
    }
    assert result.report.annotations == {"[noise]": 1}
    assert_totals(result.report, seen=10, imported=5)


# --- import_lhotse and recipes ------------------------------------------------------------------


def test_import_lhotse_manifests(tmp_path):
    write_audio(tmp_path / "mono.wav", 2.0)
    write_audio(tmp_path / "stereo.wav", 1.0, channels=2)
    mono, stereo = Recording.from_file(tmp_path / "mono.wav"), Recording.from_file(tmp_path / "stereo.wav")
    sups = [
        SupervisionSegment("m1", "mono", 0.0, 1.0, channel=0, text="Shalom", language="Hebrew"),
        SupervisionSegment("m2", "mono", 1.0, 1.5, channel=0, text="  ", language="he"),
        SupervisionSegment("m3", "mono", 1.2, 0.5, channel=0, text="no code", language=None),
        SupervisionSegment("m4", "mono", 1.5, 1.0, channel=0, text="late", language="heb"),
        SupervisionSegment("s1", "stereo", 0.0, 0.5, channel=0, text="left", language="en"),
        SupervisionSegment("s2", "stereo", 0.5, 0.5, channel=1, text="right", language="en", custom={"weak": 0}),
    ]
    RecordingSet.from_recordings([mono, stereo]).to_file(tmp_path / "recordings.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(tmp_path / "supervisions.jsonl.gz")

    result = import_lhotse(tmp_path / "recordings.jsonl.gz", tmp_path / "supervisions.jsonl.gz")

    got = [(c.channel, [fields(s, "id", "text", "language", "end", "custom") for s in c.supervisions])
           for c in result.cuts]
    weak = {"source": "lhotse", "weak": True}
    assert got == [
        (0, [("m1", "Shalom", "he", 1.0, weak), ("m4", "late", "he", 2.0, weak)]),
        (0, [("s1", "left", "en", 0.5, weak)]),
        (1, [("s2", "right", "en", 1.0, {"source": "lhotse", "weak": 0})]),  # its own "weak" is kept
    ]
    assert [(s.reason, s.where) for s in result.report.skipped] == [
        ("empty transcript", "cut mono-0, supervision m2"),
        ("no language", "cut mono-0, supervision m3"),
    ]
    (note,) = result.report.notes
    assert "supervision m4: 1.500-2.500 s clipped" in note
    assert result.cuts[0].custom == {"unlabelled": [[1.0, 2.0], [1.2, 1.7]]}  # m2 and m3: speech, no text
    assert_totals(result.report, seen=6, imported=4)
    again = import_lhotse(result.cuts, language="en")  # an imported CutSet imports as it is
    assert [s.language for c in again.cuts for s in c.supervisions] == ["he", "he", "en", "en"]
    assert_totals(again.report, seen=4, imported=4)


def test_prepare_recipe_yesno_offline(tmp_path):
    corpus = tmp_path / "waves_yesno"
    for i in range(60):
        bits = [(i >> k) & 1 for k in range(8)]
        write_audio(corpus / ("_".join(map(str, bits)) + ".wav"), 0.05, sr=8000)
    results = prepare_recipe("yesno", corpus, tmp_path / "manifests")
    assert sorted(results) == ["test", "train"]
    for result in results.values():
        assert len(result.cuts) == 30 and result.report.skipped == []
        cut = result.cuts[0]
        bits = cut.recording.id.split("_")
        assert cut.supervisions[0].text == " ".join("YES" if b == "1" else "NO" for b in bits)
        assert cut.supervisions[0].language == "he"  # lhotse writes "Hebrew"
        assert cut.supervisions[0].custom["source"] == "lhotse"
    assert (tmp_path / "manifests" / "yesno_recordings_train.jsonl.gz").is_file()


def test_prepare_recipe_unknown_name():
    with pytest.raises(DataImportError, match=r"unknown lhotse recipe 'yesnoo'; did you mean yesno\?.* e\.g\. "):
        prepare_recipe("yesnoo", "/nonexistent")


def test_folder_reads_audio_in_containers_libsndfile_cannot(tmp_path):
    root = tmp_path / "phone"
    root.mkdir()
    write_with_av(root / "memo.m4a", "aac", 44100, seconds=2.0)
    write_text(root / "memo.srt", "1\n00:00:00,200 --> 00:00:01,500\nA voice memo.\n")
    write_with_av(root / "clip.mp4", "aac", 44100, seconds=2.0, video=True)
    write_text(root / "clip.txt", "A video clip.")

    result = import_folder(root, language="en")

    assert_totals(result.report, seen=2, imported=2)
    cuts = {cut.id: cut for cut in result.cuts}
    assert sorted(cuts) == ["clip", "memo"]
    assert [s.text for s in cuts["memo"].supervisions] == ["A voice memo."]
    for cut in cuts.values():
        assert 2.0 <= cut.duration <= 2.06 and cut.load_audio().shape[-1] == cut.recording.num_samples
