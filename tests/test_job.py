"""The main job (asr/job.py, train.sh): config defaults, the targets table, and ./train.sh end to end
on a tiny corpus and model, run twice to see every stage reused."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from lhotse import CutSet

from asr.config import ConfigError, first_round_overrides, load_config
from asr.data.dataset import open_cuts
from asr.job import Job, targets_table, training_line, truncation_line
from asr.job import main as job_main
from asr.relabel import candidates

ROOT = Path(__file__).resolve().parent.parent


def test_a_job_corpus_supplies_the_data_manifests_unless_they_are_given():
    config = load_config(ROOT / "configs" / "demo.yaml", ["job.corpus=c"])
    assert config.data.train == ("c/clean/kept_cuts.jsonl.gz",)
    assert config.data.dev == ("c/dev_windows.jsonl.gz",)
    assert config.job.test == ("c/test_cuts.jsonl.gz",)
    mixed = load_config(None, ["job.corpus=c", "data.noise_rate=0.5"])
    assert mixed.data.noise == ("c/train_nospeech_cuts.jsonl.gz",)  # the training split's no-speech clips
    assert load_config(None, ["job.corpus=c"]).data.noise == ()  # no mixing: no bank
    assert load_config(None, ["job.corpus=c", "data.noise_rate=0.5", "data.noise=[n.jsonl.gz]"]).data.noise == ("n.jsonl.gz",)
    uncleaned = load_config(ROOT / "configs" / "demo.yaml", ["job.corpus=c", "job.clean=false"])
    assert uncleaned.data.train == ("c/train_windows.jsonl.gz",)
    given = load_config(ROOT / "configs" / "demo.yaml", ["data.train=[mine.jsonl.gz]", "job.test=[t.jsonl.gz]"])
    assert given.data.train == ("mine.jsonl.gz",) and given.job.test == ("t.jsonl.gz",)
    assert load_config(None).data.train == ()  # no job corpus: nothing filled in
    with pytest.raises(ConfigError, match="corruption"):
        load_config(None, ["job.corruption=1.5"])


def test_a_two_round_job_trains_on_the_cuts_its_first_round_kept():
    base = ["job.corpus=c", "train.output_dir=r", "job.score_steps=7"]
    config = load_config(ROOT / "configs" / "demo.yaml", base)
    assert config.data.train == ("r/round1/scored/kept_cuts.jsonl.gz",)
    first = load_config(ROOT / "configs" / "demo.yaml", [*base, *first_round_overrides(config)])
    assert first.data.train == ("c/clean/kept_cuts.jsonl.gz",)  # the first round trains on the cleaned windows
    assert (first.train.output_dir, first.optim.max_steps, first.job.score_steps) == ("r/round1", 7, 0)
    assert first.train.dev_decode_cuts == 0 and first.data.dev == config.data.dev
    given = [*base, "data.train=[a.jsonl.gz,b.jsonl.gz]"]
    assert load_config(None, given).data.train == ("r/round1/scored/kept_cuts.jsonl.gz",)
    assert load_config(None, [*given, *first_round_overrides(config)]).data.train == ("a.jsonl.gz", "b.jsonl.gz")
    assert load_config(None, ["job.score_steps=0"]).data.train == ()  # one round: nothing replaced
    own = [*base, "job.first_round=[optim.ctc_only_steps=7,data.max_duration=10]"]
    first = load_config(ROOT / "configs" / "demo.yaml", [*own, *first_round_overrides(load_config(None, own))])
    assert (first.optim.ctc_only_steps, first.data.max_duration, first.optim.max_steps) == (7, 10, 7)
    with pytest.raises(ConfigError, match="score_steps"):
        load_config(None, ["job.score_steps=-1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["job.first_round=[optim.lr]"])


def test_a_warm_started_second_round_starts_from_the_first_rounds_model_on_its_own_schedule():
    base = ["job.corpus=c", "train.output_dir=r", "job.score_steps=7", "job.warm_start=true", "optim.lr=1e-3",
            "job.second_round=[optim.max_steps=3,optim.lr=2e-4,optim.ctc_only_steps=0]"]
    config = load_config(ROOT / "configs" / "demo.yaml", base)
    assert (config.train.init_from, config.tokenizer.path) == ("r/round1/model.pt", "r/round1/tokenizer.model")
    assert (config.optim.max_steps, config.optim.lr, config.optim.ctc_only_steps) == (3, 2e-4, 0)
    assert config.data.train == ("r/round1/scored/kept_cuts.jsonl.gz",)
    first = load_config(ROOT / "configs" / "demo.yaml", [*base, *first_round_overrides(config)])
    assert (first.train.init_from, first.tokenizer.path) == (None, None)  # the first round starts from scratch
    assert (first.optim.max_steps, first.optim.lr, first.optim.ctc_only_steps) == (7, 1e-3, 400)
    cold = load_config(ROOT / "configs" / "demo.yaml", [*base, "job.warm_start=false"])
    assert (cold.train.init_from, cold.tokenizer.path, cold.optim.lr) == (None, None, 2e-4)
    one_round = load_config(ROOT / "configs" / "demo.yaml", ["job.second_round=[optim.lr=2e-4]"])
    assert one_round.optim.lr == 6e-4  # one round: the second round's overrides do not apply
    with pytest.raises(ConfigError, match="warm_start needs two rounds"):
        load_config(None, ["job.warm_start=true"])
    with pytest.raises(ConfigError, match="the job's own settings are the same in both rounds"):
        load_config(None, ["job.score_steps=5", "job.second_round=[job.relabel=true]"])
    with pytest.raises(ConfigError, match="second_round entries are key=value"):
        load_config(None, ["job.score_steps=5", "job.second_round=[optim.lr]"])
    with pytest.raises(ConfigError, match="job.second_round 'optim.lr=fast'.*optim.lr must be a number"):
        load_config(None, ["job.score_steps=5", "job.second_round=[optim.lr=fast]"])


def test_scoring_needs_a_finished_first_round(tmp_path, capsys):
    overrides = [f"train.output_dir={tmp_path}", "job.score_steps=5"]
    config = load_config(ROOT / "configs" / "demo.yaml", overrides)
    first = load_config(ROOT / "configs" / "demo.yaml", [*overrides, *first_round_overrides(config)])
    assert Job(config, first).needs_training(first_round=True)
    assert "first round, to score the training cuts: vocabulary and model, 5 steps" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="the first round has not finished"):
        Job(config, first).score()
    assert job_main(["first-round", str(ROOT / "configs" / "demo.yaml"), *overrides]) == 0
    assert capsys.readouterr().out.splitlines() == first_round_overrides(config)
    one_round = [f"train.output_dir={tmp_path}", "job.score_steps=0"]
    assert job_main(["first-round", str(ROOT / "configs" / "demo.yaml"), *one_round]) == 0 and capsys.readouterr().out == ""
    assert job_main(["needs-training", "--first-round", str(ROOT / "configs" / "demo.yaml"), *one_round]) == 2
    assert "job.score_steps is 0" in capsys.readouterr().err
    assert job_main(["score", str(ROOT / "configs" / "demo.yaml"), *one_round]) == 2
    assert "score: the config has one round" in capsys.readouterr().err


def _scored_first_round(tmp_path, monkeypatch):
    """A two-round job's config and first round, finished, exported and scored at 3 MADs; scoring calls
    recorded instead of made."""
    import asr.scoring

    overrides = [f"train.output_dir={tmp_path}", "job.score_steps=5", "job.score_mads=3", "data.train=[a.jsonl.gz]"]
    config = load_config(ROOT / "configs" / "demo.yaml", overrides)
    first = load_config(ROOT / "configs" / "demo.yaml", [*overrides, *first_round_overrides(config)])
    round1 = tmp_path / "round1"  # a finished first round, its export already made
    (round1 / "checkpoints" / "step-00000005").mkdir(parents=True)
    (round1 / "checkpoints" / "latest").write_text("step-00000005")
    (round1 / "summary.json").write_text(json.dumps({"steps": 5, "stopped_early": False}))
    (round1 / "model.pt").write_text("")
    scored = round1 / "scored"
    scored.mkdir()
    (scored / "kept_cuts.jsonl.gz").write_text("")
    (scored / "report.json").write_text(json.dumps({"mads": 3.0, "cuts": 4, "scored": 3, "flagged": 1,
                                                    "evaluation": None}))
    calls = []
    monkeypatch.setattr(asr.scoring, "score_checkpoint", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr("asr.data.dataset.open_cuts", lambda path: [])
    return overrides, config, first, calls


def test_scoring_is_reused_only_when_newer_than_the_model_and_made_with_the_same_mads(tmp_path, monkeypatch):
    overrides, config, first, calls = _scored_first_round(tmp_path, monkeypatch)
    scored = tmp_path / "round1" / "scored"
    Job(config, first).score()
    assert calls == []  # reused
    Job(load_config(None, [*overrides, "job.score_mads=2"]), first).score()
    assert len(calls) == 1 and calls[0][0][3] == 2.0 and not (scored / "report.json").exists()
    later = time.time() + 10
    os.utime(tmp_path / "round1" / "model.pt", (later, later))  # a newer first-round model
    (scored / "report.json").write_text(json.dumps({"mads": 3.0, "cuts": 4, "scored": 3, "flagged": 1,
                                                    "evaluation": None}))
    Job(config, first).score()
    assert len(calls) == 2


def test_a_second_round_begun_on_an_earlier_scoring_stops_the_job(tmp_path, monkeypatch):
    overrides, config, first, calls = _scored_first_round(tmp_path, monkeypatch)
    report = tmp_path / "round1" / "scored" / "report.json"
    second_round = tmp_path / "config.yaml"  # what asr-train writes as the second round starts
    second_round.write_text("")
    later = time.time() + 10
    os.utime(second_round, (later, later))
    Job(config, first).score()  # begun after the scoring: reused
    os.utime(second_round, (report.stat().st_mtime - 10,) * 2)
    with pytest.raises(RuntimeError, match=f"{tmp_path}: holds a second round .* was redone since"):
        Job(config, first).score()
    os.utime(second_round, (later, later))
    with pytest.raises(RuntimeError, match="this config would redo"):
        Job(load_config(None, [*overrides, "job.score_mads=2"]), first).score()
    assert calls == [] and report.exists()  # nothing scored, nothing removed
    assert job_main(["score", str(ROOT / "configs" / "demo.yaml"), *overrides, "job.score_mads=2"]) == 2


def test_the_other_nodes_wait_for_a_scoring_of_this_first_round(tmp_path, monkeypatch):
    """`asr.job scored`, which the other nodes of a multi-node job poll: ready only for a report written
    after the first round's latest checkpoint and made with the config's job.score_mads."""
    overrides, config, first, _ = _scored_first_round(tmp_path, monkeypatch)
    checkpoint = tmp_path / "round1" / "checkpoints" / "step-00000005"
    (checkpoint / "model_states.pt").write_text("")
    report = tmp_path / "round1" / "scored" / "report.json"
    os.utime(report, (checkpoint.stat().st_mtime + 10,) * 2)
    assert Job(config, first).scored()
    assert not Job(load_config(None, [*overrides, "job.score_mads=2"]), first).scored()  # node 0 will redo it
    later = time.time() + 60
    os.utime(checkpoint / "model_states.pt", (later, later))  # the first round trained on since
    assert not Job(config, first).scored()
    assert job_main(["scored", str(ROOT / "configs" / "demo.yaml"), *overrides]) == 1
    os.utime(report, (later + 10,) * 2)
    assert job_main(["scored", str(ROOT / "configs" / "demo.yaml"), *overrides]) == 0
    (tmp_path / "round1" / "summary.json").write_text(json.dumps({"steps": 3, "stopped_early": True}))
    assert not Job(config, first).scored()
    assert job_main(["scored", str(ROOT / "configs" / "demo.yaml"), f"train.output_dir={tmp_path}"]) == 2


def test_a_relabelling_job_trains_its_second_round_on_the_windows_its_first_round_relabelled(tmp_path, monkeypatch):
    import asr.relabel

    with pytest.raises(ConfigError, match="relabel needs two rounds"):
        load_config(None, ["job.relabel=true"])
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "dropped_cuts.jsonl.gz").write_text("")
    overrides, _, _, scorings = _scored_first_round(tmp_path, monkeypatch)
    overrides = [*overrides, "job.relabel=true", f"data.train=[{clean / 'kept_cuts.jsonl.gz'}]"]
    config = load_config(ROOT / "configs" / "demo.yaml", overrides)
    first = load_config(ROOT / "configs" / "demo.yaml", [*overrides, *first_round_overrides(config)])
    relabelled = tmp_path / "round1" / "relabelled"
    assert config.data.train == (str(relabelled / "train_cuts.jsonl.gz"),)
    assert first.data.train == (str(clean / "kept_cuts.jsonl.gz"),)
    calls = []

    def relabel(model, clean_dir, out, **kwargs):
        calls.append((clean_dir, out, kwargs["kept"]))
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_cuts.jsonl.gz").write_text("")
        (out / "report.json").write_text(json.dumps({"candidates": 2, "relabelled": 1, "rejected": {"x": 1},
                                                     "evaluation": {}}))

    monkeypatch.setattr(asr.relabel, "relabel_checkpoint", relabel)
    report = tmp_path / "round1" / "scored" / "report.json"
    os.utime(report, (time.time() + 5,) * 2)  # scored after the first round's last checkpoint
    assert not Job(config, first).scored()  # not relabelled yet
    Job(config, first).score()
    assert scorings == [] and calls == [(clean, relabelled, tmp_path / "round1" / "scored" / "kept_cuts.jsonl.gz")]
    os.utime(relabelled / "report.json", (time.time() + 10,) * 2)
    assert Job(config, first).scored()
    Job(config, first).score()
    assert len(calls) == 1  # reused while newer than the scoring
    os.utime(report, (time.time() + 20,) * 2)  # scored again since: relabelled again
    Job(config, first).score()
    assert len(calls) == 2
    (clean / "dropped_cuts.jsonl.gz").unlink()
    os.utime(report, (time.time() + 30,) * 2)
    with pytest.raises(RuntimeError, match="job.relabel: no cleaning output"):
        Job(config, first).score()


def test_targets_table_marks_each_target():
    metrics = {"wer": {"mean_over_languages": {"wer": 0.08}, "languages": {"de": {"wer": 0.05}, "ru": {"wer": 0.25}}},
               "translation": {"bleu": 51.0}, "language_id": {"accuracy": 0.97},
               "no_speech": {"f1": 0.96}, "timestamps": {"mae": None},
               "long_form_wer": {"mean_over_languages": {"wer": 0.12}}}
    rows = {line.split(" | ")[0].strip("| "): line for line in targets_table(metrics).splitlines()[2:]}
    assert rows["WER, mean over languages"].endswith("| 8.00% | ≤ 10% | yes |")
    assert rows["WER, worst language"].endswith("| 25.00% | ≤ 20% | NO |")
    assert rows["X->English BLEU"].endswith("| 51.00 | ≥ 50 | yes |")
    assert rows["language ID accuracy"].endswith("| 97.00% | ≥ 98% | NO |")
    assert rows["no-speech F1"].endswith("| 0.96 | ≥ 0.95 | yes |")
    assert rows["timestamp MAE (s)"].endswith("| – | ≤ 0.3 | NO |")  # not measured is not met
    assert rows["long-form WER, mean over languages"].endswith("| 12.00% | ≤ 10% | NO |")


def test_truncation_line_gives_the_figures_against_the_truth_where_known():
    report = {"truncations": 9, "cuts": 4, "n_corrupt": 5, "precision": 0.75, "recall": 0.6}
    assert truncation_line(report) == ("the transcripts of 4 training cuts left out of the loss (9 times); against "
                                       "the recorded corruption: precision 0.750, recall 0.600 of 5 wrong labels")
    assert truncation_line({"truncations": 0, "cuts": 0}) == ("the transcripts of 0 training cuts left out of the "
                                                              "loss (0 times)")
    report["translations"] = {"truncations": 3, "cuts": 2, "kinds": {"none": 1, "other_clip": 1}}
    assert truncation_line(report).endswith("wrong labels; the translations of 2 (3 times), their labels' "
                                            "recorded corruption: none 1, other_clip 1")
    report["suspects"] = {"n": 30, "left_out": 20, "n_corrupt": 25, "precision": 0.95, "recall": 0.76}
    assert "wrong labels; of the 30 left by cleaning to the model, 20 (precision 0.950, recall 0.760 of their 25 " \
           "wrong labels); the translations of 2" in truncation_line(report)


def test_a_stopped_or_short_run_is_trained_again_and_not_evaluated(tmp_path, capsys):
    config = load_config(ROOT / "configs" / "demo.yaml", [f"train.output_dir={tmp_path}", "optim.max_steps=10"])
    assert Job(config).needs_training()  # no summary yet
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 4, "stopped_early": True}))
    assert Job(config).needs_training() and Job(config).finish() == 1
    assert "training stopped at step 4 of 10" in capsys.readouterr().out
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 10, "stopped_early": False}))
    assert not Job(config).needs_training()
    assert "training -- reused" in capsys.readouterr().out


def test_a_run_whose_time_budget_ended_its_schedule_early_is_finished_under_the_same_budget(tmp_path, capsys):
    overrides = [f"train.output_dir={tmp_path}", "optim.max_steps=10", "optim.max_minutes=2"]
    config = load_config(ROOT / "configs" / "demo.yaml", overrides)
    summary = {"steps": 7, "stopped_early": False, "max_steps": 10, "max_minutes": 2, "schedule_steps": 7,
               "training_minutes": 1.98}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert not Job(config).needs_training()
    assert training_line(summary) == ("7 steps in 2.0 min (of optim.max_steps=10: the schedule was fitted to "
                                      "optim.max_minutes=2)")
    for other in ("optim.max_minutes=3", "optim.max_steps=12", "optim.max_minutes=0"):  # another schedule
        assert Job(load_config(ROOT / "configs" / "demo.yaml", [*overrides, other])).needs_training()
    assert "vocabulary and model, 10 steps or what fits in 3 min" in capsys.readouterr().out
    (tmp_path / "summary.json").write_text(json.dumps({**summary, "schedule_steps": 8}))  # stopped short of it
    assert Job(config).needs_training()


TINY = [
    "job.hours=0.004", "job.eval_clips=1", "job.seed=3", "job.corruption=0.5", "tokenizer.vocab_size=400",
    "model.n_audio_state=32", "model.n_audio_head=2", "model.n_audio_layer=1", "model.n_text_ctx=64",
    "model.n_text_state=32", "model.n_text_head=2", "model.n_text_layer=1",
    "data.num_workers=0", "optim.max_steps=3", "optim.warmup_steps=1", "train.cpu_processes=1",
    "train.zero_stage=0", "train.eval_every=0", "train.save_every=2", "train.dev_decode_cuts=2",
    "train.max_decode_tokens=8", "job.score_steps=2", "job.relabel=true", "job.warm_start=true",
    "job.second_round=[optim.max_steps=4]",
]


def _train_sh(tmp_path: Path) -> str:
    overrides = [f"job.corpus={tmp_path / 'corpus'}", f"train.output_dir={tmp_path / 'run'}", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ASR_JOB_START", None)
    done = subprocess.run(["bash", str(ROOT / "train.sh"), "configs/demo.yaml", *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(),
                    reason="train.sh runs in the repository's .venv, which ./test.sh makes")
def test_train_sh_runs_every_stage_then_reuses_them(tmp_path):
    out = _train_sh(tmp_path)
    for number, stage in enumerate(["demo corpus", "weak-label cleaning", "training", "evaluation",
                                    "example transcription"], start=1):
        assert f"== stage {number}/5: {stage}" in out
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["steps"] == 4  # the second round's own schedule
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert {"wer", "translation", "language_id", "no_speech", "timestamps"} <= set(metrics)
    assert (run / "eval" / "report.md").exists() and (run / "model.pt").exists()
    shown = [line for line in out.splitlines() if line.startswith("example ")]
    assert len(shown) == 1 and shown[0].split()[1].endswith(".srt") and Path(shown[0].split()[1]).exists()
    assert "| WER, mean over languages |" in out and "whole job this time:" in out
    truncation = json.loads((run / "summary.json").read_text())["truncation"]  # on in the demo recipe
    assert truncation["n_cuts"] > 0  # the demo corpus records the truth of its labels
    assert truncation_line(truncation) in out
    assert (tmp_path / "corpus" / "clean" / "kept_cuts.jsonl.gz").exists()
    # Two rounds: the first one's model scored the cleaned windows, and the run trained on those it kept.
    first = run / "round1"
    assert "first round, to score the training cuts: vocabulary and model, 2 steps" in out
    assert json.loads((first / "summary.json").read_text())["steps"] == 2 and (first / "model.pt").exists()
    scored = json.loads((first / "scored" / "report.json").read_text())
    assert scored["cuts"] == len(CutSet.from_file(tmp_path / "corpus" / "clean" / "kept_cuts.jsonl.gz"))
    assert scored["evaluation"]["n_cuts"] == scored["scored"] > 0  # the truth of the labels is recorded
    kept = CutSet.from_file(first / "scored" / "kept_cuts.jsonl.gz")
    assert len(kept) == scored["cuts"] - scored["flagged"]
    # and relabelled what the cleaning dropped: the second round trains on the kept cuts and those.
    clean = tmp_path / "corpus" / "clean"
    relabelling = json.loads((first / "relabelled" / "report.json").read_text())
    assert relabelling["candidates"] == len(candidates(open_cuts(clean / "kept_cuts.jsonl.gz"),
                                                       open_cuts(clean / "dropped_cuts.jsonl.gz"))) > 0
    relabelled = [c.id for c in open_cuts(first / "relabelled" / "relabelled_cuts.jsonl.gz")]
    assert len(relabelled) == relabelling["relabelled"]
    trained_on = [c.id for c in open_cuts(first / "relabelled" / "train_cuts.jsonl.gz")]
    assert set(trained_on) == {c.id for c in kept} | set(relabelled) and len(trained_on) == len(set(trained_on))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["train"] == [str(first / "relabelled" / "train_cuts.jsonl.gz")]
    # The second round started from the first round's model and vocabulary (job.warm_start)
    assert config["train"]["init_from"] == str(first / "model.pt")
    assert (run / "tokenizer.model").read_bytes() == (first / "tokenizer.model").read_bytes()
    assert "second round, from the first round's model, on the cuts it kept: model, 4 steps" in out
    assert f"first round    {first}: scored {scored['scored']} of {scored['cuts']} cuts" in out
    assert f"first round    {first}: relabelled {relabelling['relabelled']} of {relabelling['candidates']}" in out

    trained = (run / "summary.json").stat().st_mtime
    again = _train_sh(tmp_path)
    assert "(reused)" in again  # the corpus
    assert "reused: " + str(tmp_path / "corpus" / "clean") in again
    assert "training -- first round, to score the training cuts: reused" in again
    assert f"reused: {first / 'scored'}" in again and f"reused: {first / 'relabelled'}" in again
    assert "training -- second round, from the first round's model, on the cuts it kept: reused" in again
    assert f"reused: {run / 'model.pt'}" in again and f"reused: {run / 'eval' / 'metrics.json'}" in again
    assert (run / "summary.json").stat().st_mtime == trained  # training was not launched again
