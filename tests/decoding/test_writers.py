import importlib.util
import io
import json
from pathlib import Path

import pytest

from asr.decoding.writers import FORMATS, format_timestamp, get_writer

RESULT = {
    "text": " Hello there. Grüße aus Köln --> 東京! The end.",
    "language": "de",
    "segments": [
        {"id": 0, "start": 0.0, "end": 2.5, "text": " Hello there."},
        {"id": 1, "start": 61.0004, "end": 65.4996, "text": " Grüße aus\tKöln --> 東京!\n"},
        {"id": 2, "start": 3725.12, "end": 3727.0, "text": " The end."},
    ],
}

EXPECTED = {
    "txt": "Hello there.\nGrüße aus\tKöln --> 東京!\nThe end.\n",
    "srt": ("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
            "2\n00:01:01,000 --> 00:01:05,500\nGrüße aus\tKöln -> 東京!\n\n"
            "3\n01:02:05,120 --> 01:02:07,000\nThe end.\n\n"),
    "vtt": ("WEBVTT\n\n"
            "00:00.000 --> 00:02.500\nHello there.\n\n"
            "01:01.000 --> 01:05.500\nGrüße aus\tKöln -> 東京!\n\n"
            "01:02:05.120 --> 01:02:07.000\nThe end.\n\n"),
    "tsv": ("start\tend\ttext\n"
            "0\t2500\tHello there.\n"
            "61000\t65500\tGrüße aus Köln --> 東京!\n"  # a tab in the text would break the row
            "3725120\t3727000\tThe end.\n"),
}


@pytest.mark.parametrize("extension", ["txt", "srt", "vtt", "tsv"])
def test_writer_bytes(tmp_path, extension):
    get_writer(extension, tmp_path)(RESULT, "/audio/talk.v2.flac")
    assert (tmp_path / f"talk.v2.{extension}").read_bytes() == EXPECTED[extension].encode("utf-8")


def test_json_keeps_non_ascii(tmp_path):
    get_writer("json", tmp_path)(RESULT, "talk.wav")
    data = (tmp_path / "talk.json").read_bytes()
    assert data.startswith('{"text": " Hello there. Grüße aus Köln --> 東京! The end.", "language": "de", '
                           '"segments": [{"id": 0, "start": 0.0, "end": 2.5, "text": " Hello there."}'.encode())
    assert json.loads(data) == RESULT


def test_all_writes_every_format(tmp_path):
    get_writer("all", tmp_path)(RESULT, Path("x/talk.wav"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"talk.{f}" for f in FORMATS)


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unknown output format"):
        get_writer("docx", tmp_path)


def test_format_timestamp():
    assert format_timestamp(0.0) == "00:00.000"
    assert format_timestamp(59.9996) == "01:00.000"  # rounds to the millisecond, carrying into the minutes
    assert format_timestamp(3600.0) == "01:00:00.000"
    assert format_timestamp(1.5, always_include_hours=True, decimal_marker=",") == "00:00:01,500"
    with pytest.raises(ValueError):
        format_timestamp(-1.0)


def _whisper_utils():
    """openai-whisper's utils.py alone (stdlib only), without importing torch through its package."""
    spec = importlib.util.find_spec("whisper")
    if spec is None:
        pytest.skip("openai-whisper is not installed")
    path = Path(spec.submodule_search_locations[0]) / "utils.py"
    module_spec = importlib.util.spec_from_file_location("whisper_utils_reference", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extension", ["txt", "srt", "vtt", "tsv"])
def test_matches_openai_whisper(extension):
    utils = _whisper_utils()
    writer = {"txt": utils.WriteTXT, "srt": utils.WriteSRT, "vtt": utils.WriteVTT, "tsv": utils.WriteTSV}[extension]
    buffer = io.StringIO()
    writer(".").write_result(RESULT, buffer)
    assert buffer.getvalue() == EXPECTED[extension]
