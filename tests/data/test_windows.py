import random

import pytest
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource
from lhotse.utils import fastcopy

from asr.data.windows import window_cut, window_cuts

SR = 16000

# (start, end) in seconds of the 12 segments of a 75 s recording
SEGMENTS_75S = [
    (0.5, 3.0), (4.0, 9.5), (10.0, 14.2), (15.0, 22.0), (22.5, 29.0), (30.5, 35.0),
    (36.0, 44.7), (45.1, 50.0), (51.0, 58.3), (60.0, 66.0), (67.5, 71.25), (72.0, 74.5),
]  # fmt: skip


def long_cut(id: str, duration: float, segments: list[tuple[float, float]]) -> MonoCut:
    """A cut over a whole recording (no audio is read) with one supervision per segment."""
    recording = Recording(
        id=id,
        sources=[AudioSource(type="file", channels=[0], source=f"{id}.wav")],
        sampling_rate=SR,
        num_samples=round(duration * SR),
        duration=duration,
    )
    supervisions = [
        SupervisionSegment(f"{id}-{i:02d}", id, start, end - start, channel=0, text=f"text {i}", language="en")
        for i, (start, end) in enumerate(segments)
    ]
    return MonoCut(id, 0.0, duration, 0, recording=recording, supervisions=supervisions)


def test_75s_recording_becomes_windows_between_segments():
    cut = long_cut("rec", 75.0, SEGMENTS_75S)
    windows, skipped = window_cut(cut)

    assert skipped == []
    # Each window starts at a segment and runs on to the next segment's start (or 30 s, or the end).
    assert [(w.id, w.start, w.duration) for w in windows] == [
        ("rec_00000500", 0.5, pytest.approx(30.0)),
        ("rec_00030500", 30.5, pytest.approx(29.5)),
        ("rec_00060000", 60.0, pytest.approx(15.0)),
    ]
    assert all(w.duration <= 30.0 and w.recording_id == "rec" for w in windows)
    original = {s.id: s for s in cut.supervisions}
    placed = [s.id for w in windows for s in w.supervisions]
    assert sorted(placed) == sorted(original)  # every segment in exactly one window
    for window in windows:
        for supervision in window.supervisions:
            source = original[supervision.id]
            assert abs(window.start + supervision.start - source.start) < 1e-6
            assert abs(supervision.duration - source.duration) < 1e-6
            assert 0 <= supervision.start and supervision.end <= window.duration + 1e-6
        for source in cut.supervisions:  # no segment crosses a window's edge
            inside = window.start <= source.start and source.end <= window.end + 1e-6
            outside = source.end <= window.start + 1e-6 or source.start >= window.end - 1e-6
            assert inside or outside
    assert [w.custom["prev_text"] for w in windows] == [
        None,
        "text 0 text 1 text 2 text 3 text 4",
        "text 5 text 6 text 7 text 8",
    ]


def test_a_segment_longer_than_a_window_is_skipped():
    windows, skipped = window_cut(long_cut("single", 40.0, [(0.0, 40.0)]))
    assert windows == []
    ((reason, where, detail),) = [(s.reason, s.where, s.detail) for s in skipped]
    assert reason == "segment longer than 30 s"
    assert where == "cut single, segment single-00" and "40.000 s" in detail


def test_windows_stop_before_a_skipped_segment_and_restart_without_prev_text():
    cut = long_cut("gap", 60.0, [(1.0, 5.0), (6.0, 45.0), (46.0, 50.0), (52.0, 58.0)])
    windows, skipped = window_cut(cut)
    assert [(w.start, w.duration, [s.id for s in w.supervisions]) for w in windows] == [
        (1.0, pytest.approx(5.0), ["gap-00"]),  # ends where the untranscribable segment starts
        (46.0, pytest.approx(14.0), ["gap-02", "gap-03"]),
    ]
    assert [w.custom["prev_text"] for w in windows] == [None, None]
    assert [s.where for s in skipped] == ["cut gap, segment gap-01"]


def test_speech_without_text_is_kept_out_of_every_window():
    cut = long_cut("talk", 60.0, [(1.0, 5.0), (6.0, 9.0), (12.0, 20.0), (40.0, 44.0)])
    cut = fastcopy(cut, custom={"unlabelled": [[9.5, 11.0], [30.0, 33.0]], "noise": "hum"})
    windows, skipped = window_cut(cut)
    assert [(w.start, w.duration, [s.id for s in w.supervisions]) for w in windows] == [
        (1.0, pytest.approx(8.5), ["talk-00", "talk-01"]),  # ends where the speech without text starts
        (12.0, pytest.approx(18.0), ["talk-02"]),  # runs on through silence up to the next span
        (40.0, pytest.approx(20.0), ["talk-03"]),
    ]
    assert [w.custom["prev_text"] for w in windows] == [None, None, None]  # each after a span
    assert all(w.custom == {"noise": "hum", "prev_text": None} for w in windows)
    assert skipped == []  # the importer reported the spans' items


def test_a_short_cut_with_speech_without_text_is_windowed_around_it():
    cut = fastcopy(long_cut("short", 10.0, [(1.0, 4.0), (6.0, 9.0)]), custom={"unlabelled": [[4.5, 5.5]]})
    windows, _ = window_cut(cut)
    assert [(w.id, w.start, w.duration) for w in windows] == [
        ("short_00001000", 1.0, pytest.approx(3.5)),
        ("short_00006000", 6.0, pytest.approx(4.0)),
    ]


def test_short_cut_passes_unchanged_and_long_cut_without_segments_is_skipped():
    short = long_cut("short", 10.0, [(1.0, 4.0), (5.0, 9.0)])
    windows, skipped = window_cut(short)
    assert windows[0] is short and len(windows) == 1 and skipped == []
    assert short.custom is None  # no prev_text
    windows, skipped = window_cut(long_cut("silent", 45.0, []))
    assert windows == [] and [s.reason for s in skipped] == ["longer than 30 s and no segments"]


def test_window_cuts_counts():
    cuts = CutSet.from_cuts(
        [
            long_cut("rec", 75.0, SEGMENTS_75S),
            long_cut("short", 10.0, [(1.0, 4.0)]),
            long_cut("single", 40.0, [(0.0, 40.0)]),
        ]
    )
    windowed, report = window_cuts(cuts, max_duration=30.0)
    assert [c.id for c in windowed] == ["rec_00000500", "rec_00030500", "rec_00060000", "short"]
    assert (report.cuts, report.passed, report.windowed, report.windows) == (3, 1, 2, 3)
    assert [s.where for s in report.skipped] == ["cut single, segment single-00"]
    assert report.to_dict()["skipped"][0]["reason"] == "segment longer than 30 s"


def test_random_layouts_keep_every_segment_whole_and_once():
    rng = random.Random(0)
    for n in range(100):
        segments, t = [], rng.uniform(0, 2)
        while True:
            end = round(t + rng.choice([rng.uniform(0.2, 8), rng.uniform(8, 29.9)]), 3)
            if end > 180:
                break
            segments.append((round(t, 3), end))
            t = end + rng.choice([0.0, rng.uniform(0, 3)])
        cut = long_cut(f"r{n}", 180.0, segments)
        windows, skipped = window_cut(cut)
        assert skipped == []
        placed = sorted((round(w.start + s.start, 6), round(w.start + s.end, 6))
                        for w in windows for s in w.supervisions)
        assert len(segments) > 5
        assert placed == sorted(segments)
        for window in windows:
            assert window.duration <= 30.0 + 1e-9 and window.end <= 180.0 + 1e-9
            for start, end in segments:
                assert end <= window.start + 1e-6 or start >= window.end - 1e-6 or (
                    window.start - 1e-6 <= start and end <= window.end + 1e-6
                )
