import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from asr.audio import log_mel_spectrogram_batch
from asr.checkpoint import save
from asr.cli.prepare import main
from asr.model import Model, ModelDims
from asr.scoring import MIN_SCORES, RULE, flag_outliers, score_cuts
from asr.tokenizer import Tokenizer, train_sentencepiece

TEXTS = ["Heute sieht die Katze den Hund.", "Der Vater liest ein Buch.", "Morgen regnet es im Garten."]


def tiny_scorer(root) -> tuple[Model, Tokenizer]:
    """An untrained model with a CTC head and a vocabulary of TEXTS, saved as ``root / "model.pt"``."""
    tokenizer = Tokenizer.from_sentencepiece(train_sentencepiece([" " + t for t in TEXTS] * 20, vocab_size=300))
    torch.manual_seed(0)
    dims = ModelDims(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                     n_vocab=tokenizer.n_vocab, n_text_ctx=64, n_text_state=32, n_text_head=2, n_text_layer=1,
                     ctc_head=True)
    model = Model(dims).eval()
    save(root / "model.pt", model, tokenizer)
    return model, tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    model, tokenizer = tiny_scorer(root)
    rng = np.random.default_rng(0)
    cuts = []
    for i in range(MIN_SCORES + 4):
        seconds = 1.0 + 0.1 * (i % 7)
        path = root / f"c{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(round(16000 * seconds))).astype("float32"), 16000)
        recording = Recording.from_file(path)
        custom = {"task": "translate"} if i == 0 else ({"nospeech": True} if i == 1 else None)
        supervisions = [] if i == 1 else [SupervisionSegment(
            id=f"s{i}", recording_id=recording.id, start=0, duration=seconds, text=TEXTS[i % 3], language="de",
            custom={"translation": "Today.", "corruption": "substitute" if i % 5 == 0 else None})]
        cuts.append(MonoCut(id=f"c{i}", start=0, duration=seconds, channel=0, recording=recording,
                            supervisions=supervisions, custom=custom))
    CutSet.from_cuts(cuts).to_file(root / "cuts.jsonl.gz")
    return root, model, tokenizer, cuts


def test_a_cut_scores_its_own_ctc_loss_per_token_whatever_its_batch(setup):
    _, model, tokenizer, cuts = setup
    result = score_cuts(model, tokenizer, cuts, batch_seconds=5.0)
    assert set(result.scores) == {c.id for c in cuts[2:]}  # not the translate-only and no-speech cuts
    assert result.report["not_scored"] == {"no known transcript": 1, "no speech": 1}
    cut = cuts[5]  # scored in a padded batch beside longer cuts; here alone
    mel, n_frames = log_mel_spectrogram_batch([cut.load_audio()[0]])
    with torch.no_grad():
        xa, _ = model.encode(mel, n_frames)
        log_probs = model.ctc_logits(xa).log_softmax(-1).transpose(0, 1)
    targets = tokenizer.encode(" " + cut.supervisions[0].text)
    loss = F.ctc_loss(log_probs, torch.tensor([targets]), torch.tensor([log_probs.shape[0]]),
                      torch.tensor([len(targets)]), blank=model.ctc_blank, reduction="sum")
    assert result.scores[cut.id] == ("de", pytest.approx(math.log(float(loss) / len(targets) + 1e-3), abs=1e-3))


def test_cuts_above_their_languages_bound_are_flagged_and_nothing_is_lost(setup, tmp_path):
    _, model, tokenizer, cuts = setup
    result = score_cuts(model, tokenizer, cuts, mads=0.0)  # a bound at the median: about half are flagged
    kept, flagged = {c.id for c in result.kept}, {c.id for c in result.flagged}
    assert kept | flagged == {c.id for c in cuts} and not kept & flagged and flagged
    median = result.report["languages"]["de"]["median"]
    for cut in result.flagged:
        assert cut.custom["dropped_by"] == RULE and cut.custom["ctc_score"] > median - 1e-4
    assert all(result.scores[i][1] <= median for i in kept if i in result.scores)
    assert {"c0", "c1"} <= kept
    truth = result.report["evaluation"]
    assert truth["n_cuts"] == len(result.scores) and truth["n_corrupt"] == 4  # c5, c10, c15, c20
    result.write(tmp_path / "out")
    assert {c.id for c in CutSet.from_file(tmp_path / "out" / "flagged_cuts.jsonl.gz")} == flagged
    lines = (tmp_path / "out" / "scores.jsonl").read_text().splitlines()
    assert len(lines) == len(result.scores) and json.loads(lines[0])["language"] == "de"
    assert "| de | 22 |" in (tmp_path / "out" / "report.md").read_text()


def test_each_language_is_judged_on_its_own_scale():
    scores = {f"de{i}": ("de", 0.1 * math.sin(i)) for i in range(MIN_SCORES)}
    scores |= {f"ru{i}": ("ru", 2.0 + 0.1 * math.sin(i)) for i in range(MIN_SCORES)}
    scores |= {"de-wrong": ("de", 1.5), "ru-ordinary": ("ru", 2.05), "ru-wrong": ("ru", 3.5)}
    scores |= {f"it{i}": ("it", 5.0 * i) for i in range(MIN_SCORES - 1)}  # too few to judge
    flagged, languages = flag_outliers(scores, mads=3.0)
    assert set(flagged) == {"de-wrong", "ru-wrong"}
    assert languages["it"]["bound"] is None and languages["de"]["n"] == MIN_SCORES + 1
    assert flagged["ru-wrong"] == pytest.approx(languages["ru"]["bound"])


def test_the_score_command_writes_the_second_rounds_manifests(setup, capsys):
    root = setup[0]
    code = main(["score", str(root / "cuts.jsonl.gz"), "--model", str(root / "model.pt"), "--out", str(root / "scored"),
                 "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "scored 22 of 24 cuts" in out and "against the recorded truth" in out
    # lhotse reads an empty manifest as None: with 3 MADs a random model may flag nothing
    manifests = [CutSet.from_file(root / "scored" / f"{name}_cuts.jsonl.gz") for name in ("kept", "flagged")]
    ids = [c.id for cuts in manifests for c in cuts or []]
    assert sorted(ids) == sorted(f"c{i}" for i in range(24))
