import json
import math

import pytest
import torch
from lhotse import MonoCut, SupervisionSegment

from asr.data.sequence import IGNORE
from asr.loss import multitask_loss
from asr.model import Output
from asr.truncation import MIN_HISTORY, LossTruncation, read_truncated, truncation_report


def scores_batch(languages, lengths=None, valid=None, ids=None):
    n = len(languages)
    return {"languages": list(languages), "cut_ids": ids or [f"c{i}" for i in range(n)],
            "ctc_lengths": torch.tensor(lengths or [5] * n), "ctc_valid": torch.tensor(valid or [True] * n)}


def fill(truncation, language, losses, step=0):
    for loss in losses:
        truncation(torch.tensor([loss]), scores_batch([language]), step=step)


def clean_losses(n, centre=0.5):
    return [centre * math.exp(0.2 * math.sin(i)) for i in range(n)]  # spread about 0.2 in log


def test_an_outlier_of_its_language_is_left_out_and_logged(tmp_path):
    truncation = LossTruncation(from_step=10, mads=3.0, history=100, log_dir=tmp_path, rank=1)
    fill(truncation, "de", clean_losses(MIN_HISTORY))
    fill(truncation, "ru", clean_losses(MIN_HISTORY, centre=2.0))  # a harder language: its own scale
    # de 0.55: ordinary; de 3.0: six times the median; ru 3.0: ordinary for ru
    keep = truncation(torch.tensor([0.55, 3.0, 3.0]), scores_batch(["de", "de", "ru"], ids=["a", "b", "c"]), step=10)
    assert keep.tolist() == [True, False, True]
    assert truncation.judged == 3
    [record] = read_truncated(tmp_path)
    assert record["cut"] == "b" and record["step"] == 10 and record["language"] == "de"
    assert record["score"] == pytest.approx(math.log(3.0 + 1e-3), abs=1e-4) and record["bound"] < record["score"]
    assert (tmp_path / "rank-1.jsonl").exists()


def test_nothing_is_left_out_before_the_step_or_the_history_or_without_a_transcript(tmp_path):
    truncation = LossTruncation(from_step=10, mads=3.0, history=100, log_dir=tmp_path)
    fill(truncation, "de", clean_losses(MIN_HISTORY - 1))
    outlier = torch.tensor([30.0])
    assert truncation(outlier, scores_batch(["de"]), step=10).all()  # history one short
    fill(truncation, "de", clean_losses(5))
    assert truncation(outlier, scores_batch(["de"]), step=9).all()  # before from_step
    assert truncation(outlier, scores_batch(["de"], valid=[False]), step=10).all()  # words unknown
    assert truncation(outlier, scores_batch(["de"], lengths=[0]), step=10).all()  # no speech
    assert truncation(outlier, scores_batch([None]), step=10).all()
    assert read_truncated(tmp_path) == []
    assert not truncation(outlier, scores_batch(["de"]), step=10).all()


@pytest.mark.parametrize("hold", [True, False])
def test_a_suspect_transcript_waits_for_the_model_then_meets_a_tighter_bound_out_of_the_history(tmp_path, hold):
    truncation = LossTruncation(from_step=10, mads=3.0, history=100, log_dir=tmp_path, suspect_mads=1.0,
                                hold_suspects=hold)
    fill(truncation, "de", clean_losses(MIN_HISTORY))  # log scores about log(0.5) +- 0.2
    bound = truncation.bound("de")
    median = truncation.bound("de", 0.0)
    tight = truncation.bound("de", 1.0)
    assert median < tight < bound
    between = math.exp((tight + bound) / 2)  # a loss the usual bound keeps and the suspects' bound does not
    batch = scores_batch(["de", "de", "de"], ids=["plain", "suspect", "plain-unknown"], valid=[True, True, False])
    batch["suspects"] = [False, True, True]  # a suspect without a known transcript is not one for its transcript
    assert truncation(torch.tensor([between, 0.5, 9.0]), batch, step=9).tolist() == [True, not hold, True]
    assert truncation.held == int(hold) and truncation.judged == 0
    history = list(truncation.histories["de"])
    keep = truncation(torch.tensor([between, between, 9.0]), batch, step=10)
    assert keep.tolist() == [True, False, True]  # the same loss: kept as a plain cut, left out as a suspect
    assert truncation.judged == 2 and truncation.held == int(hold)
    assert list(truncation.histories["de"])[-1] == pytest.approx(math.log(between + 1e-3))  # the plain cut's
    assert len(truncation.histories["de"]) == len(history) + 1  # and not the suspect's, nor at step 9
    [record] = read_truncated(tmp_path)
    assert record["cut"] == "suspect" and record["suspect"] is True
    assert record["bound"] == pytest.approx(truncation.bound("de", 1.0), abs=1e-3)
    # a suspect within the tighter bound trains
    assert truncation(torch.tensor([0.5]), {**scores_batch(["de"]), "suspects": [True]}, step=11).all()
    # translations are never suspects
    translation = {"languages": ["de"], "cut_ids": ["suspect"], "suspects": [True],
                   "translation_ctc_lengths": torch.tensor([5]), "translation_ctc_valid": torch.tensor([True])}
    assert truncation(torch.tensor([0.5]), translation, step=9, label="translation").all()
    state = truncation.state()
    resumed = LossTruncation(from_step=10, mads=3.0, history=100, suspect_mads=1.0, hold_suspects=hold)
    resumed.load_state(state, step=12)
    assert resumed.held == truncation.held


def test_the_bound_follows_the_recent_history_only():
    truncation = LossTruncation(from_step=0, mads=3.0, history=MIN_HISTORY)
    fill(truncation, "de", clean_losses(MIN_HISTORY, centre=5.0))
    assert truncation(torch.tensor([6.0]), scores_batch(["de"]), step=0).all()
    fill(truncation, "de", clean_losses(MIN_HISTORY, centre=0.5))  # the model got better: old scores gone
    assert not truncation(torch.tensor([6.0]), scores_batch(["de"]), step=0).all()


def test_a_resumed_truncation_decides_as_an_uninterrupted_one_and_forgets_replayed_lines(tmp_path):
    losses = clean_losses(120) + [9.0] + clean_losses(30) + [8.0, 0.4, 7.0]
    whole = LossTruncation(from_step=0, mads=3.0, history=80, log_dir=tmp_path / "whole")
    decisions = [bool(whole(torch.tensor([x]), scores_batch(["it"]), step=i)) for i, x in enumerate(losses)]
    assert decisions.count(False) == 3

    first = LossTruncation(from_step=0, mads=3.0, history=80, log_dir=tmp_path / "resumed")
    for i, x in enumerate(losses[:153]):  # steps 0-152; the checkpoint was taken after step 150
        first(torch.tensor([x]), scores_batch(["it"]), step=i)
        if i == 150:
            saved = json.loads(json.dumps(first.state()))
    resumed = LossTruncation(from_step=0, mads=3.0, history=80, log_dir=tmp_path / "resumed")
    resumed.load_state(saved, step=151)  # steps 151 and 152 are done again
    after = [bool(resumed(torch.tensor([x]), scores_batch(["it"]), step=i)) for i, x in enumerate(losses) if i >= 151]
    assert after == decisions[151:]
    assert read_truncated(tmp_path / "resumed") == read_truncated(tmp_path / "whole")
    assert resumed.judged == whole.judged


def test_a_sticky_truncation_keeps_a_cut_and_its_speed_copies_out_and_resumes_with_them(tmp_path):
    sticky = LossTruncation(from_step=0, mads=3.0, history=100, log_dir=tmp_path / "sticky", sticky=True)
    fresh = LossTruncation(from_step=0, mads=3.0, history=100)
    for truncation in (sticky, fresh):
        fill(truncation, "de", clean_losses(MIN_HISTORY))
        assert not truncation(torch.tensor([6.0]), scores_batch(["de"], ids=["bad"]), step=5).any()
    assert sticky.take_new_out() == ["bad"] and sticky.take_new_out() == []
    fitted = torch.tensor([0.5, 0.5, 0.5])  # the model fits it now, at every speed
    ids = ["bad", "bad_sp1.1", "good"]
    assert sticky(fitted, scores_batch(["de"] * 3, ids=ids), step=6).tolist() == [False, False, True]
    assert fresh(fitted, scores_batch(["de"] * 3, ids=ids), step=6).all()
    assert sticky.take_new_out() == []  # already out: nothing new to share
    records = read_truncated(tmp_path / "sticky")
    assert [(r["cut"], r.get("earlier", False)) for r in records] == [("bad", False), ("bad", True), ("bad_sp1.1", True)]
    assert sticky.judged == fresh.judged == 4  # an earlier left-out counts as judged

    resumed = LossTruncation(from_step=0, mads=3.0, history=100, sticky=True)
    resumed.load_state(json.loads(json.dumps(sticky.state())), step=7)
    assert not resumed(torch.tensor([0.5]), scores_batch(["de"], ids=["bad_sp0.9"]), step=7).any()
    other = LossTruncation(from_step=0, mads=3.0, history=100, sticky=True)
    other.add_out(["bad"])  # left out by another process
    assert not other(torch.tensor([0.5]), scores_batch(["de"], ids=["bad"]), step=0).any()


def test_a_cut_left_out_for_both_labels_takes_no_loss_in_any_term():
    torch.manual_seed(0)
    logits, ctc_logits, translation_logits = torch.randn(3, 4, 6), torch.randn(3, 8, 7), torch.randn(3, 8, 7)
    batch = {"labels": torch.tensor([[1, 2, IGNORE, IGNORE], [3, 4, 5, IGNORE], [2, 2, 2, 2]]),
             "ctc_targets": torch.tensor([[1, 2, 0], [3, 4, 5], [2, 0, 0]]), "ctc_lengths": torch.tensor([2, 3, 1]),
             "ctc_valid": torch.tensor([True, True, True]),
             "translation_ctc_targets": torch.tensor([[1], [2], [3]]),
             "translation_ctc_lengths": torch.tensor([1, 1, 1]),
             "translation_ctc_valid": torch.tensor([True, True, True])}
    seen = {}

    def leave_out_the_second(per_token, b, label):
        seen[label], seen["label"] = per_token, label
        return torch.tensor([True, False, True])

    output = Output(logits, ctc_logits, None, translation_logits)
    loss = multitask_loss(output, {**batch, "languages": ["de"] * 3, "tasks": ["transcribe"] * 3}, 0.1, 0.3, None,
                          0.2, select=leave_out_the_second)
    rows = [0, 2]
    without = multitask_loss(Output(logits[rows], ctc_logits[rows], None, translation_logits[rows]),
                             {k: v[rows] for k, v in batch.items()}, 0.1, 0.3, None, 0.2)
    assert loss.n_left_out == loss.n_translations_left_out == 1 and loss.n_tokens == without.n_tokens == 6
    assert seen["label"] == "translation"  # both labels judged; this function leaves out both
    for term in ("total", "attention", "ctc", "translation_ctc"):
        assert getattr(loss, term).item() == pytest.approx(getattr(without, term).item(), rel=1e-5), term
    full = multitask_loss(output, batch, 0.1, 0.3, None, 0.2)
    assert full.total.item() != pytest.approx(loss.total.item(), rel=1e-3)
    # the select function is given each cut's CTC loss per target token
    per_cut = torch.nn.functional.ctc_loss(ctc_logits.log_softmax(-1).transpose(0, 1), batch["ctc_targets"],
                                           torch.full((3,), 8), batch["ctc_lengths"], blank=6, reduction="none")
    assert torch.allclose(seen["transcript"], per_cut / batch["ctc_lengths"], rtol=1e-5)


def _two_cut_batch(languages, tasks):
    return {"labels": torch.tensor([[1, 2, 3], [3, 4, IGNORE]]), "ctc_targets": torch.tensor([[1, 2], [3, 4]]),
            "ctc_lengths": torch.tensor([2, 2]), "ctc_valid": torch.tensor([True, True]),
            "translation_ctc_targets": torch.tensor([[1], [2]]), "translation_ctc_lengths": torch.tensor([1, 1]),
            "translation_ctc_valid": torch.tensor([True, True]), "languages": languages, "tasks": tasks}


def _judge(transcripts, translations):
    return lambda per_token, batch, label: torch.tensor(transcripts if label == "transcript" else translations)


@pytest.mark.parametrize("task", ["translate", "transcribe"])
def test_a_cut_whose_transcript_is_left_out_keeps_its_translation_terms(task):
    torch.manual_seed(0)
    output = Output(torch.randn(2, 3, 6), torch.randn(2, 8, 7), None, torch.randn(2, 8, 7))
    batch = _two_cut_batch(["de", "de"], ["transcribe", task])
    loss = multitask_loss(output, batch, 0.0, 0.3, None, 0.2, select=_judge([True, False], [True, True]))
    first = multitask_loss(Output(output.logits[:1], output.ctc_logits[:1], None, output.translation_ctc_logits[:1]),
                           {k: v[:1] for k, v in batch.items()}, 0.0, 0.3, None, 0.2)
    full = multitask_loss(output, batch, 0.0, 0.3, None, 0.2)
    assert loss.n_left_out == 1 and loss.n_translations_left_out == 0
    assert loss.ctc.item() == pytest.approx(first.ctc.item(), rel=1e-5)  # the transcript: the first cut's only
    assert loss.translation_ctc.item() == pytest.approx(full.translation_ctc.item(), rel=1e-5)  # both cuts'
    # the decoder's targets: the second cut's too where it drew X->English, else the first cut's only
    expected = full if task == "translate" else first
    assert loss.n_tokens == expected.n_tokens and loss.attention.item() == pytest.approx(expected.attention.item())
    # optim.truncate_translations false: the transcript's verdict is the cut's, in every term
    whole = multitask_loss(output, batch, 0.0, 0.3, None, 0.2, select=_judge([True, False], [True, True]),
                           judge_translations=False)
    assert whole.n_tokens == first.n_tokens and whole.n_translations_left_out == 1
    assert whole.translation_ctc.item() == pytest.approx(first.translation_ctc.item(), rel=1e-5)


def test_a_translation_left_out_takes_its_terms_only_and_english_goes_with_its_transcript():
    torch.manual_seed(0)
    output = Output(torch.randn(2, 3, 6), torch.randn(2, 8, 7), None, torch.randn(2, 8, 7))
    full = multitask_loss(output, _two_cut_batch(["de", "de"], ["translate", "transcribe"]), 0.0, 0.3, None, 0.2)
    # the second cut's translation is an outlier: its transcript still trains, the first cut's translation too
    batch = _two_cut_batch(["de", "de"], ["translate", "transcribe"])
    loss = multitask_loss(output, batch, 0.0, 0.3, None, 0.2, select=_judge([True, True], [True, False]))
    assert (loss.n_left_out, loss.n_translations_left_out, loss.n_tokens) == (0, 1, full.n_tokens)
    assert loss.ctc.item() == pytest.approx(full.ctc.item(), rel=1e-5)
    assert loss.translation_ctc.item() != pytest.approx(full.translation_ctc.item(), rel=1e-3)
    # English speech: its translation target is its transcript, so it goes when the transcript does
    english = multitask_loss(output, _two_cut_batch(["de", "en"], ["translate", "transcribe"]), 0.0, 0.3, None,
                             0.2, select=_judge([True, False], [True, True]))
    assert (english.n_left_out, english.n_translations_left_out) == (1, 1)
    assert english.translation_ctc.item() == pytest.approx(loss.translation_ctc.item(), rel=1e-5)


def test_translations_are_judged_on_their_own_scale_and_logged_as_such(tmp_path):
    truncation = LossTruncation(from_step=0, mads=3.0, history=100, log_dir=tmp_path, sticky=True)
    batch = {**scores_batch(["de"]), "translation_ctc_lengths": torch.tensor([4]),
             "translation_ctc_valid": torch.tensor([True])}
    for loss in clean_losses(MIN_HISTORY):
        truncation(torch.tensor([loss]), batch, step=0)
        truncation(torch.tensor([loss * 6]), batch, step=0, label="translation")  # a higher scale
    assert truncation(torch.tensor([3.0]), batch, step=1, label="translation").all()  # ordinary for translations
    assert not truncation(torch.tensor([3.0]), batch, step=1).any()  # six times the transcripts' median
    assert not truncation(torch.tensor([30.0]), batch, step=2, label="translation").any()
    assert [r.get("label") for r in read_truncated(tmp_path)] == [None, "translation"]
    assert sorted(truncation.out) == ["c0", "translation:c0"]  # sticky: each label out on its own
    with pytest.raises(ValueError, match="translation"):
        truncation(torch.tensor([1.0]), batch, step=3, label="subtitle")


def test_truncation_needs_a_ctc_head():
    batch = {"labels": torch.tensor([[0]]), "ctc_targets": torch.tensor([[0]]), "ctc_lengths": torch.tensor([1]),
             "ctc_valid": torch.tensor([True])}
    with pytest.raises(ValueError, match="CTC head"):
        multitask_loss(Output(torch.zeros(1, 1, 2), None, None), batch, select=lambda p, b: torch.tensor([True]))


def _cut(cut_id, corruption, **custom):
    supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=1, text="x",
                                     custom={"corruption": corruption})
    return MonoCut(id=cut_id, start=0, duration=1, channel=0, supervisions=[supervision], custom=custom or None)


def test_the_report_scores_cuts_left_out_against_the_recorded_truth():
    cuts = [_cut("a", "other_clip"), _cut("b", None), _cut("c", "substitute"), _cut("d", None), _cut("e", None),
            # X->English only, its transcript dropped by cleaning: never judged, so not in the figures
            _cut("f", "drop", task="translate", transcript_dropped_by="rate_outlier")]
    records = [{"cut": "a", "step": 5}, {"cut": "a_sp1.1", "step": 9}, {"cut": "b_sp0.9", "step": 7}]
    report = truncation_report(records, cuts)
    assert report["truncations"] == 3 and report["cuts"] == 2  # "a" twice (once sped up), "b" once
    assert report["precision"] == 0.5 and report["recall"] == 0.5
    assert report["recall_by_kind"]["other_clip"]["recall"] == 1.0
    assert report["recall_by_kind"]["substitute"]["recall"] == 0.0
    plain = [MonoCut(id="z", start=0, duration=1, channel=0)]
    assert truncation_report([{"cut": "z", "step": 1}], plain) == {"truncations": 1, "cuts": 1}
    # translations left out: counted apart, with the recorded corruption of their cuts' labels
    translations = [{"cut": "a", "step": 6, "label": "translation"}, {"cut": "d_sp0.9", "step": 8, "label": "translation"},
                    {"cut": "a_sp0.9", "step": 9, "label": "translation"}]
    both = truncation_report(records + translations, cuts)
    assert {k: v for k, v in both.items() if k != "translations"} == report
    assert both["translations"] == {"truncations": 3, "cuts": 2, "kinds": {"none": 1, "other_clip": 1}}


def test_the_report_scores_the_suspects_apart():
    cuts = [_cut("a", "drop", suspect_by="rate_outlier"), _cut("b", None, suspect_by="rate_outlier"),
            _cut("c", "insert", suspect_by="rate_outlier"), _cut("d", "substitute")]
    records = [{"cut": "a_sp0.9", "step": 5, "suspect": True}, {"cut": "d", "step": 6}]
    report = truncation_report(records, cuts)
    assert report["cuts"] == 2 and report["recall"] == pytest.approx(2 / 3)
    suspects = report["suspects"]
    assert suspects["n"] == 3 and suspects["left_out"] == 1 and suspects["n_corrupt"] == 2
    assert suspects["precision"] == 1.0 and suspects["recall"] == 0.5
    assert "suspects" not in truncation_report(records, cuts[3:])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="history"):
        LossTruncation(from_step=0, mads=3.0, history=MIN_HISTORY - 1)


def _leave_out_one_and_share(rank, port, out_file):
    import torch.distributed as dist

    from asr.train import _share_left_out
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    truncation = LossTruncation(from_step=0, mads=3.0, history=MIN_HISTORY, sticky=True)
    fill(truncation, "de", clean_losses(MIN_HISTORY))
    truncation(torch.tensor([6.0]), scores_batch(["de"], ids=[f"bad{rank}_sp0.9"]), step=1)
    _share_left_out(truncation)
    _share_left_out(truncation)  # nothing new: nothing added, nothing lost
    (out_file.parent / f"{out_file.name}{rank}").write_text(json.dumps(sorted(truncation.out)))
    dist.destroy_process_group()


def test_sticky_processes_share_the_cuts_they_left_out(tmp_path):
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_leave_out_one_and_share, args=(port, tmp_path / "out"), nprocs=2)
    assert [json.loads((tmp_path / f"out{r}").read_text()) for r in (0, 1)] == [["bad0", "bad1"]] * 2
