import json

import pytest

from asr.evaluate.metrics import language_id, no_speech, timestamp_error, translation_scores, word_error_rates
from asr.evaluate.report import HYP_FIELDS, read_log, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def metrics():
    return {
        "wer": word_error_rates(["a b c d", "eins zwei", "你好世界"], ["a x c", "eins zwei", "你们世界"],
                                ["en", "de", "zh"]),
        "translation": {**translation_scores(["the cat sat on a mat"], ["the cat sat on the mat"]), "n": 1,
                        "languages": {"de": {"bleu": 0.0, "chrf": 12.5, "n": 1}}},
        "language_id": language_id(["en", "de", "de", "zh"], ["en", "en", "de", "zh"]),
        "no_speech": no_speech([True, True, False, False], [True, False, True, False]),
        "timestamps": timestamp_error([[(0.0, 2.0, "a")]], [[(0.5, 2.25, "a")]]),
        "long_form_wer": word_error_rates(["eins zwei drei vier"], ["eins drei vier"], ["de"]),
        "dev_loss": float("nan"),
    }


HYPS = [{"id": "cut-1", "hypothesis": "a x c", "reference": "a b c d", "language": "en",
         "language_probs": {"en": 0.9, "de": 0.1}, "no_speech_prob": 0.01, "task": "transcribe", "extra": 1},
        {"id": "cut-2", "hypothesis": "Grüße"}]


def _write_log(run_dir):
    records = [{"step": 10, "loss": 5.0, "lr": 1e-4}, {"step": 20, "loss": 4.0, "lr": 2e-4},
               {"step": 20, "dev_loss": 4.5, "dev_wer": 0.9}, {"step": 30, "loss": 3.0, "lr": 2e-4},
               {"step": 40, "loss": 2.5, "lr": 2e-4}, {"step": 40, "dev_loss": 3.5, "dev_wer": 0.6}]
    run_dir.mkdir()
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_write_report(tmp_path, metrics):
    _write_log(tmp_path / "run")
    report = write_report(tmp_path / "eval", metrics, HYPS, run_dir=tmp_path / "run")
    out = tmp_path / "eval"
    assert report == out / "report.md"

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["wer"]["languages"]["en"]["wer"] == 0.5
    assert saved["dev_loss"] is None  # NaN is not JSON

    rows = [json.loads(line) for line in (out / "hyps.jsonl").read_text(encoding="utf-8").splitlines()]
    assert list(rows[0]) == [*HYP_FIELDS, "extra"]
    assert rows[1] == {"id": "cut-2", "reference": None, "hypothesis": "Grüße", "language": None,
                       "language_probs": None, "no_speech_prob": None, "task": None}

    for name in ("wer_by_language.png", "lid_confusion.png", "training_curves.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, name

    text = report.read_text(encoding="utf-8")
    assert "| en | 50.00 | 42.86 | 1 | 4 | 0 |" in text  # WER 2/4, CER 3/7
    assert "| zh | 25.00 | 25.00 | 1 | 4 | 0 |" in text
    assert "| **mean over languages** | 25.00 |" in text  # (50 + 0 + 25) / 3
    assert "| **pooled** | 30.00 |" in text  # 3 errors over 10 units
    long_form = text[text.index("## Long-form transcription"):]
    assert "| language | WER | CER | recordings | words |" in long_form
    assert "| de | 25.00 |" in long_form  # one word of four missing
    assert "zh is computed on characters" in text
    assert "| all | 53.73 |" in text  # BLEU = 100 (1/12)^(1/4)
    assert "| de | 0.00 | 12.50 | 1 |" in text
    assert "Accuracy: 75.00 % of 4" in text
    assert "| **de** | 1 | 1 | 0 |" in text  # rows: reference; columns: de, en, zh
    assert "| 0.500 | 0.500 | 0.500 | 1 | 1 | 1 | 1 |" in text
    assert "| 0.375 | 2 | 1 | 0 | 0 |" in text  # (0.5 + 0.25) / 2
    for name in ("wer_by_language.png", "lid_confusion.png", "training_curves.png"):
        assert f"]({name})" in text


def test_report_without_run_or_optional_metrics(tmp_path):
    write_report(tmp_path, {"translation": translation_scores(["a b c d"], ["a b c d"])}, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyps.jsonl", "metrics.json", "report.md"]
    text = (tmp_path / "report.md").read_text()
    assert "| 100.00 | 100.00 |" in text and "Plots" not in text


def test_read_log_separates_training_and_validation(tmp_path):
    _write_log(tmp_path / "run")
    train, dev = read_log(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in train] == [10, 20, 30, 40]
    assert [r["dev_wer"] for r in dev] == [0.9, 0.6]
