import json

import numpy as np
import soundfile as sf
from lhotse import CutSet

from asr.cli.prepare import main
from asr.tokenizer import Tokenizer


def noise(path, seconds, rate=16000):
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(int(seconds * rate))).astype("float32"), rate)


def srt(cues):
    return "\n".join(f"{i + 1}\n00:00:{a:06.3f} --> 00:00:{b:06.3f}\n{t}\n".replace(".", ",") for i, (a, b, t) in enumerate(cues))


def test_folder_import_windows_long_recordings_and_reports(tmp_path, capsys):
    folder = tmp_path / "corpus"
    folder.mkdir()
    noise(folder / "short.wav", 2.0)
    (folder / "short.txt").write_text("Guten Tag.")
    noise(folder / "long.flac", 50.0)
    cues = [(i * 5.0, i * 5.0 + 4.0, f"Satz Nummer {i}.") for i in range(10)]
    (folder / "long.srt").write_text(srt(cues))
    noise(folder / "orphan.wav", 1.0)  # no transcript: skipped and reported

    assert main(["folder", str(folder), "--out", str(tmp_path / "out"), "--language", "de"]) == 0
    cuts = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz")
    assert max(c.duration for c in cuts) <= 30.0
    assert sum(len(c.supervisions) for c in cuts) == 11
    report = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert report["windows"]["windowed"] == 1 and report["windows"]["windows"] == 2
    assert "audio without a transcript" in (tmp_path / "out" / "import_report.md").read_text()
    assert "skipped" in capsys.readouterr().out


def test_folder_import_keeps_speech_without_text_out_and_warns_without_windows(tmp_path, capsys):
    folder = tmp_path / "corpus"
    folder.mkdir()
    noise(folder / "talk.wav", 12.0)
    # the second cue starts 2 s before the first ends: skipped, its speech heard without text
    (folder / "talk.srt").write_text(srt([(1.0, 4.0, "Eins"), (2.0, 6.0, "Zwei"), (8.0, 11.0, "Drei")]))

    assert main(["folder", str(folder), "--out", str(tmp_path / "windows"), "--language", "de"]) == 0
    windows = CutSet.from_file(tmp_path / "windows" / "cuts.jsonl.gz")
    assert [(w.start, w.end, [s.text for s in w.supervisions]) for w in windows] == [
        (1.0, 4.0, ["Eins"]), (8.0, 12.0, ["Drei"])]

    assert main(["folder", str(folder), "--out", str(tmp_path / "whole"), "--language", "de", "--no-window"]) == 0
    assert "1 cuts hold speech without text" in capsys.readouterr().err
    assert "Warning: 1 cuts hold speech without text" in (tmp_path / "whole" / "import_report.md").read_text()


def test_nemo_manifest_import(tmp_path):
    noise(tmp_path / "a.wav", 1.0)
    (tmp_path / "m.json").write_text(json.dumps({"audio_filepath": "a.wav", "duration": 1.0, "text": "hallo"}) + "\n")
    assert main(["nemo", str(tmp_path / "m.json"), "--out", str(tmp_path / "out"), "--language", "de"]) == 0
    (cut,) = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz")
    assert [(s.text, s.language) for s in cut.supervisions] == [("hallo", "de")]


def test_tsv_then_shar_then_tokenizer(tmp_path):
    for i in range(3):
        noise(tmp_path / f"a{i}.wav", 1.0)
    (tmp_path / "list.tsv").write_text("path\tsentence\tlocale\n" + "".join(
        f"a{i}.wav\tHallo Welt {i}.\tde\n" for i in range(3)))
    assert main(["tsv", str(tmp_path / "list.tsv"), "--out", str(tmp_path / "m")]) == 0
    assert main(["shar", str(tmp_path / "m" / "cuts.jsonl.gz"), "--out", str(tmp_path / "shar"),
                 "--shard-size", "2"]) == 0
    assert len(list((tmp_path / "shar").glob("cuts.*.jsonl.gz"))) == 2
    assert main(["tokenizer", str(tmp_path / "m" / "cuts.jsonl.gz"), "--out", str(tmp_path / "tok.model"),
                 "--vocab-size", "300"]) == 0
    tokenizer = Tokenizer.from_sentencepiece((tmp_path / "tok.model").read_bytes())
    assert tokenizer.decode(tokenizer.encode(" Hallo Welt 2.")) == " Hallo Welt 2."


def test_bad_input_is_one_clear_message_and_exit_code_2(tmp_path, capsys):
    assert main(["folder", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("asr-prepare: error:") and "nowhere" in error


def test_demo_then_clean_reports_precision_and_recall(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out), "--hours", "0.02", "--min-eval-clips", "2", "--workers", "1",
                 "--corruption", "0.5"]) == 0
    for split in ("train", "dev", "test"):
        windows = CutSet.from_file(out / f"{split}_windows.jsonl.gz")
        assert max(c.duration for c in windows) <= 30.0
    bank = CutSet.from_file(out / "train_nospeech_cuts.jsonl.gz")  # the noise bank: train's no-speech clips
    train = CutSet.from_file(out / "train_cuts.jsonl.gz")
    assert len(bank) > 0 and {c.id for c in bank} == {c.id for c in train if c.custom.get("nospeech")}
    assert all(not c.supervisions for c in bank)
    assert main(["clean", str(out / "train_windows.jsonl.gz"), "--out", str(out / "clean"),
                 "--set", "rate_outlier_min_count=5"]) == 0
    printed = capsys.readouterr().out
    assert "against the recorded truth: precision" in printed
    kept = CutSet.from_file(out / "clean" / "kept_cuts.jsonl.gz")
    dropped = CutSet.from_file(out / "clean" / "dropped_cuts.jsonl.gz")
    assert len(kept) + len(dropped) == len(CutSet.from_file(out / "train_windows.jsonl.gz"))
    assert all(c.custom["dropped_by"] for c in dropped)
    report = json.loads((out / "clean" / "report.json").read_text())
    assert report["config"]["rate_outlier_min_count"] == 5


def test_clean_with_a_bad_override_names_it(tmp_path, capsys):
    cuts = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([]).to_file(cuts)
    assert main(["clean", str(cuts), "--out", str(tmp_path / "c"), "--set", "rate_outlier_madz=3"]) == 2
    assert "clean.rate_outlier_madz" in capsys.readouterr().err
