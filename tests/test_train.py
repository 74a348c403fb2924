"""The trainer end to end on CPU processes (gloo): real launches, tiny model, a few steps."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.utils import fastcopy

from asr.checkpoint import export, load, read_tag
from asr.config import load_config
from asr.evaluate.validation import validate
from asr.train import (TrainingError, _RankShare, clip_gradients, ctc_weight_at, deepspeed_config, fitted_end,
                       lr_factor, pace_window)

PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
STEPS = 8
STARTUP_ABORT = "terminate called without an active exception"  # a native thread left running
TEXTS = {"de": ["Hallo Welt.", "Guten Morgen.", "Die Katze schläft."], "fr": ["Bonjour le monde.", "Le chat dort."]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """26 training clips, one of them with a corrupt audio file and one with an empty transcript (in
    different batches: a batch left empty is skipped by every rank, which one process would not mirror); 4 dev."""
    out = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    cuts = []
    for i in range(30):
        language = "de" if i % 2 else "fr"
        path = out / f"c{i}.flac"
        sf.write(path, (0.1 * rng.standard_normal(int((1.0 + (i % 5) * 0.4) * 16000))).astype("float32"), 16000)
        recording = Recording.from_file(path, recording_id=f"c{i}")
        text = "" if i == 12 else TEXTS[language][i % len(TEXTS[language])]
        supervision = SupervisionSegment(id=f"c{i}-0", recording_id=recording.id, start=0, duration=recording.duration,
                                         text=text, language=language, custom={"translation": "Hello."})
        cuts.append(MonoCut(id=f"c{i}", start=0, duration=recording.duration, channel=0, recording=recording,
                            supervisions=[supervision]))
    CutSet.from_cuts(cuts[:26]).to_file(out / "train.jsonl.gz")
    CutSet.from_cuts(cuts[26:]).to_file(out / "dev.jsonl.gz")
    (out / "c3.flac").write_bytes(b"not audio any more")  # corrupt after the manifest was made
    config = {
        "model": {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 32, "n_audio_head": 2, "n_audio_layer": 1,
                  "n_text_ctx": 64, "n_text_state": 32, "n_text_head": 2, "n_text_layer": 1, "ctc_head": True},
        "tokenizer": {"vocab_size": 300},
        "data": {"train": [str(out / "train.jsonl.gz")], "dev": [str(out / "dev.jsonl.gz")], "max_duration": 6.0,
                 "num_buckets": 2, "num_workers": 0},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "max_steps": STEPS, "ctc_weight": 0.3},
        "train": {"log_every": 1, "eval_every": 0, "save_every": 3, "dev_decode_cuts": 2, "max_decode_tokens": 8},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    return out


def launch(corpus: Path, run_dir: Path, processes: int = 1, *overrides: str, wait: bool = True):
    command = [PYTHON, "-m", "asr.train"] if processes == 1 else [TORCHRUN, "--standalone",
                                                                   f"--nproc_per_node={processes}", "-m", "asr.train"]
    command += [str(corpus / "config.yaml"), f"train.output_dir={run_dir}", *overrides]
    # faulthandler: a rank that dies in native code prints every thread's Python stack
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and STARTUP_ABORT in done.stdout + done.stderr and not _logged_steps(Path(run_dir)):
        # A rank of a 2-process run sometimes aborts before its first step, inside the native
        # libraries (seen on 2026-12-06 with ZeRO-3 on gloo in about half of the runs); once more, from scratch.
        # The first try's output goes to the warnings summary, which pytest prints even when the retry passes.
        warnings.warn(f"{' '.join(command)}: aborted before its first step, retried; its output:\n"
                      f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
        shutil.rmtree(run_dir, ignore_errors=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """One process, ZeRO-2, two micro-batches per step: the global batch of two processes."""
    run_dir = tmp_path_factory.mktemp("reference")
    launch(corpus, run_dir, 1, "train.zero_stage=2", "train.grad_accum=2")
    return run_dir


def test_lr_schedule():
    assert [lr_factor(s, 4, 10, "linear") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 10, "linear") == 1.0 and lr_factor(7, 4, 10, "linear") == 0.5
    assert lr_factor(10, 4, 10, "linear") == 0.0 and lr_factor(20, 4, 10, "linear") == 0.0
    assert lr_factor(7, 4, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(9, 4, 10, "constant") == 1.0


def test_a_time_budget_ends_the_schedule_at_the_last_step_that_fits():
    # 100 s trained at step 400, 0.5 s a step, 600 s of budget: 1000 steps fit in the 500 s left
    assert fitted_end(400, 5000, 100.0, 0.5, 600.0) == 1400
    assert fitted_end(400, 1200, 100.0, 0.5, 600.0) == 1200  # max_steps fits: never later than it
    assert fitted_end(400, 5000, 700.0, 0.5, 600.0) == 400  # the budget is spent: end now
    assert pace_window(5000) == (20, 200) and pace_window(100) == (1, 5)


def test_ctc_weight_is_one_for_the_ctc_only_steps_then_the_configured_weight():
    from asr.config import OptimConfig

    optim = OptimConfig(ctc_weight=0.3, ctc_only_steps=3)
    assert [ctc_weight_at(s, optim) for s in range(5)] == [1.0, 1.0, 1.0, 0.3, 0.3]
    assert ctc_weight_at(0, OptimConfig(ctc_weight=0.3)) == 0.3
    with pytest.raises(ValueError, match="ctc_only_steps needs the CTC loss"):
        OptimConfig(ctc_only_steps=10)
    with pytest.raises(ValueError, match="ctc_weight must be in"):
        OptimConfig(ctc_weight=1.5)
    with pytest.raises(ValueError, match="translation_ctc_weight"):
        OptimConfig(translation_ctc_weight=-0.1)


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_gradient_clip_scales_every_gradient_by_the_norm_of_all_of_them(max_norm):
    generator = torch.Generator().manual_seed(0)
    parameters = [torch.nn.Parameter(torch.zeros(shape)) for shape in [(3, 4), (4,), (2, 2, 2), (5,)]]
    for parameter in parameters[:3]:  # the last one took no part in the loss
        parameter.grad = torch.randn(parameter.shape, generator=generator)
    before = [p.grad.clone() for p in parameters[:3]]
    norm = torch.cat([g.flatten() for g in before]).norm()
    assert 0.5 < norm < 100.0
    returned = clip_gradients(parameters, max_norm)
    assert returned == pytest.approx(norm.item())
    scale = min(1.0, max_norm / (norm.item() + 1e-6))
    for parameter, grad in zip(parameters, before):
        torch.testing.assert_close(parameter.grad, grad * scale)
    assert parameters[3].grad is None
    if max_norm < norm:
        assert torch.cat([p.grad.flatten() for p in parameters[:3]]).norm() == pytest.approx(max_norm, rel=1e-5)


def test_rank_share_gives_each_rank_its_batches_of_one_stream():
    stream = list(range(11))
    shares = [list(_RankShare(stream, rank, 3, skip=1)) for rank in range(3)]
    assert shares == [[3, 6], [4, 7], [5, 8]]  # the first group skipped, the incomplete last one left out


def test_run_reports_the_corrupt_file_and_the_empty_transcript(reference):
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["steps"] == STEPS and not summary["stopped_early"]
    assert summary["dropped_cuts"]["unreadable audio"] >= 1
    assert summary["dropped_cuts"]["empty transcript"] >= 1
    assert summary["final_metrics"]["dev_loss"] > 0
    assert summary["final_metrics"]["dev_ctc_cer"] >= 0  # the CTC head's own transcripts, scored apart
    assert set(losses(reference)) == set(range(1, STEPS + 1))
    assert (reference / "config.yaml").exists() and (reference / "tokenizer.model").exists()
    assert read_tag(reference / "checkpoints") == f"step-{STEPS:08d}"


def test_tensorboard_holds_every_logged_step_when_the_run_ends(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(reference / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("loss")] == sorted(losses(reference))
    assert [event.step for event in events.Scalars("dev_loss")] == [STEPS]  # the last record of the run


def test_one_process_without_zero_skips_the_all_reduce_and_matches_the_reference(corpus, reference, tmp_path):
    launch(corpus, tmp_path, 1, "train.zero_stage=0", "train.grad_accum=2")
    one, reference_losses = losses(tmp_path), losses(reference)
    for step in range(1, STEPS + 1):
        assert one[step] == pytest.approx(reference_losses[step], rel=1e-4), step


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_two_processes_match_one_process_with_the_same_global_batch(corpus, reference, tmp_path, stage):
    launch(corpus, tmp_path, 2, f"train.zero_stage={stage}")
    one, two = losses(reference), losses(tmp_path)
    for step in range(1, 6):
        assert two[step] == pytest.approx(one[step], rel=1e-4), step
    # export consolidates the shards: its dev loss is the engine's at the end of the run
    exported = export(tmp_path, tmp_path / "model.pt")
    model, tokenizer, config = load(exported)
    summary = json.loads((tmp_path / "summary.json").read_text())
    dev = CutSet.from_file(corpus / "dev.jsonl.gz")
    metrics = validate(model, tokenizer, dev, config.data, decode_cuts=0, label_smoothing=config.optim.label_smoothing,
                       ctc_weight=config.optim.ctc_weight)
    assert metrics["dev_loss"] == pytest.approx(summary["final_metrics"]["dev_loss"], rel=1e-5)


def test_resume_after_sigkill_continues_with_the_same_batches_and_losses(corpus, reference, tmp_path):
    process = launch(corpus, tmp_path, 1, "train.zero_stage=2", "train.grad_accum=2", wait=False)
    deadline = time.time() + 240
    while time.time() < deadline and max(_logged_steps(tmp_path), default=0) < 4:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = int(read_tag(tmp_path / "checkpoints").removeprefix("step-"))
    assert saved in (3, 6)  # the checkpoint of step 3, unless step 6's was complete before the kill
    lines_before = len((tmp_path / "log.jsonl").read_text().splitlines())
    resumed = launch(corpus, tmp_path, 1, "train.zero_stage=2", "train.grad_accum=2")
    assert f"resumed from step-{saved:08d}" in resumed.stdout
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()[lines_before:]]
    after_resume = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert sorted(after_resume) == list(range(saved + 1, STEPS + 1))
    expected = losses(reference)
    for step in after_resume:
        assert after_resume[step] == pytest.approx(expected[step], abs=1e-6), step


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_or_ctrl_c_saves_a_checkpoint_and_exits_0(corpus, tmp_path, signum):
    process = launch(corpus, tmp_path, 1, "optim.max_steps=1000", "train.save_every=0", wait=False)
    deadline = time.time() + 240
    while time.time() < deadline and max(_logged_steps(tmp_path), default=0) < 2:
        time.sleep(0.05)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_early"] and summary["steps"] >= 2
    assert read_tag(tmp_path / "checkpoints") == f"step-{summary['steps']:08d}"


def test_a_time_budget_shortens_the_schedule_and_a_second_launch_finds_it_done(corpus, tmp_path):
    run_dir = tmp_path / "budget"
    budget = 0.15  # minutes: 9 s, where this tiny model trains tens of steps a second at most
    launch(corpus, run_dir, 1, "optim.max_steps=5000", f"optim.max_minutes={budget}", "data.dev=[]",
           "train.save_every=0", "train.log_every=5")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == summary["schedule_steps"] < 5000 and summary["max_minutes"] == budget
    assert summary["training_minutes"] < 2 * budget
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == summary["steps"]
    assert records[-1]["lr"] < 0.2 * max(r["lr"] for r in records)  # the schedule decayed to its new end
    launch(corpus, run_dir, 1, "optim.max_steps=5000", f"optim.max_minutes={budget}", "data.dev=[]",
           "train.save_every=0", "train.log_every=5")
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == len(records)  # nothing trained again
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == summary["steps"]


def test_suspect_cuts_need_loss_truncation_and_wait_for_it(corpus, tmp_path):
    cuts = CutSet.from_file(corpus / "train.jsonl.gz")
    suspects = CutSet.from_cuts(fastcopy(c, custom={"suspect_by": "rate_outlier"}) for c in cuts)
    suspects.to_file(tmp_path / "suspects.jsonl.gz")
    common = [f"data.train=[{tmp_path / 'suspects.jsonl.gz'}]", "optim.max_steps=2", "data.dev=[]"]
    done = subprocess.run([PYTHON, "-m", "asr.train", str(corpus / "config.yaml"),
                           f"train.output_dir={tmp_path / 'off'}", *common],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "left by cleaning for loss truncation to judge" in done.stderr
    assert "optim.truncate_from_step" in done.stderr and "Traceback" not in done.stderr
    launch(corpus, tmp_path / "held", 1, *common, "optim.truncate_from_step=5", "optim.truncate_history=50")
    summary = json.loads((tmp_path / "held" / "summary.json").read_text())["truncation"]
    assert summary["judged"] == 0 and summary["suspects_held"] > 0  # every transcript held before step 5
    assert summary["suspects"] == {"n": 26, "left_out": 0}


def test_bad_config_is_one_clear_error(corpus, tmp_path):
    done = subprocess.run([PYTHON, "-m", "asr.train", str(corpus / "config.yaml"), "optim.lr=fast"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "optim.lr must be a number" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_vocabulary_too_small_for_the_text_is_one_clear_error(corpus, tmp_path):
    done = subprocess.run([PYTHON, "-m", "asr.train", str(corpus / "config.yaml"), f"train.output_dir={tmp_path}",
                           "tokenizer.vocab_size=10"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "asr-train: error: tokenizer.vocab_size=10: SentencePiece" in done.stderr
    assert "Traceback" not in done.stderr


def _logged_steps(run_dir: Path) -> list[int]:
    log = run_dir / "log.jsonl"
    if not log.exists():
        return []
    steps = []
    for line in log.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass  # a line being written
    return steps


def test_bf16_trains_on_cpu_and_fp16_is_refused_there(corpus, tmp_path):
    launch(corpus, tmp_path / "bf16", 1, "train.precision=bf16", "optim.max_steps=2", "data.dev=[]")
    assert set(losses(tmp_path / "bf16")) == {1, 2}
    done = subprocess.run([PYTHON, "-m", "asr.train", str(corpus / "config.yaml"), f"train.output_dir={tmp_path}/fp16",
                           "train.precision=fp16"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "fp16 needs a GPU" in done.stderr


def test_autocast_computes_in_bf16_over_fp32_weights(corpus, tmp_path):
    launch(corpus, tmp_path / "fp32", 1, "optim.max_steps=2", "data.dev=[]")
    launch(corpus, tmp_path / "autocast", 1, "train.autocast=bf16", "optim.max_steps=2", "data.dev=[]")
    fp32, mixed = losses(tmp_path / "fp32"), losses(tmp_path / "autocast")
    assert set(mixed) == {1, 2}
    # The same batches and weights at step 1: the loss within bf16's rounding of fp32's, but not equal to it
    assert mixed[1] != fp32[1] and mixed[1] == pytest.approx(fp32[1], rel=0.02)
    model, _, config = load(export(tmp_path / "autocast", tmp_path / "model.pt"))
    assert config.train.autocast == "bf16" and {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_run_from_a_checkpoint_starts_from_its_weights_and_vocabulary(corpus, tmp_path):
    launch(corpus, tmp_path / "first", 1, "optim.max_steps=2", "data.dev=[]")
    first = export(tmp_path / "first", tmp_path / "first.pt")
    # A second run at learning rate 0 ends with the weights it started from. Its vocabulary is the given one:
    # a vocabulary trained anew at this size would be an error.
    launch(corpus, tmp_path / "second", 1, "optim.max_steps=1", "data.dev=[]", "optim.lr=0", f"train.init_from={first}",
           f"tokenizer.path={tmp_path / 'first' / 'tokenizer.model'}", "tokenizer.vocab_size=10")
    assert (tmp_path / "second" / "tokenizer.model").read_bytes() == (tmp_path / "first" / "tokenizer.model").read_bytes()
    started, ended = load(first)[0].state_dict(), load(export(tmp_path / "second", tmp_path / "second.pt"))[0].state_dict()
    # (a fresh start would end with its own random weights)
    assert started.keys() == ended.keys() and all(torch.equal(started[k], ended[k]) for k in started)


def test_autocast_is_refused_over_lower_precision_weights_and_in_fp16_on_cpu(corpus):
    config = load_config(corpus / "config.yaml", ["train.autocast=bf16"])
    assert deepspeed_config(config, torch.device("cpu"))["torch_autocast"] == {"enabled": True, "dtype": "bf16"}
    assert "torch_autocast" not in deepspeed_config(load_config(corpus / "config.yaml"), torch.device("cpu"))
    with pytest.raises(TrainingError, match="needs train.precision=fp32, not bf16"):
        deepspeed_config(load_config(corpus / "config.yaml", ["train.autocast=bf16", "train.precision=bf16"]),
                         torch.device("cpu"))
    with pytest.raises(TrainingError, match="autocast=fp16 needs a GPU"):
        deepspeed_config(load_config(corpus / "config.yaml", ["train.autocast=fp16"]), torch.device("cpu"))


def test_auto_autocast_takes_bf16_only_where_the_cpu_computes_it(corpus, monkeypatch, capsys):
    import asr.train

    auto = load_config(corpus / "config.yaml", ["train.autocast=auto"])
    cpu = torch.device("cpu")
    monkeypatch.setattr(asr.train, "native_bf16", lambda device: True)
    assert deepspeed_config(auto, cpu)["torch_autocast"] == {"enabled": True, "dtype": "bf16"}
    assert "train.autocast=auto: bf16" in capsys.readouterr().out
    # Over bf16 weights there is nothing to autocast: auto takes none, where bf16 itself is refused
    assert "torch_autocast" not in deepspeed_config(
        load_config(corpus / "config.yaml", ["train.autocast=auto", "train.precision=bf16"]), cpu)
    monkeypatch.setattr(asr.train, "native_bf16", lambda device: False)
    assert "torch_autocast" not in deepspeed_config(auto, cpu)
    assert "train.autocast=auto: none (this CPU," in capsys.readouterr().out
    # An explicit bf16 is obeyed on such a CPU, with a warning that says what it costs
    explicit = deepspeed_config(load_config(corpus / "config.yaml", ["train.autocast=bf16"]), cpu)
    assert explicit["torch_autocast"]["dtype"] == "bf16" and "emulated" in capsys.readouterr().err


def test_native_bf16_follows_the_cpus_own_probes(monkeypatch):
    import asr.train

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not asr.train.native_bf16(torch.device("cpu"))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert asr.train.native_bf16(torch.device("cpu"))


def test_a_translation_ctc_branch_trains_its_loss_and_is_validated(corpus, tmp_path):
    run_dir = tmp_path / "translation"
    launch(corpus, run_dir, 1, "optim.max_steps=2", "model.translation_ctc_head=true",
           "model.n_translation_ctc_layer=1", "model.translation_ctc_detached=true", "optim.translation_ctc_weight=0.1")
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    trained = [r for r in records if "loss" in r]
    assert len(trained) == 2 and all(r["translation_ctc_loss"] > 0 for r in trained)
    validated = [r for r in records if "dev_loss" in r]
    assert validated and 0 <= validated[-1]["dev_translation_ctc_cer"]  # the branch's own best path, scored


def test_loss_truncation_keeps_each_ranks_scores_in_the_checkpoint_and_reports(corpus, tmp_path):
    run_dir = tmp_path / "truncation"
    launch(corpus, run_dir, 2, "optim.max_steps=3", "train.save_every=3", "optim.truncate_from_step=1",
           "optim.truncate_history=50", "optim.truncate_sticky=true", "data.dev=[]")
    [states_file] = (run_dir / "checkpoints" / "step-00000003").glob("mp_rank_00_model_states.pt")
    states = torch.load(states_file, weights_only=False)["truncation"]
    assert len(states) == 2  # one per rank, each rank's own scores
    assert [state["out"] for state in states] == [[], []]
    scores = [sorted(v for history in state["histories"].values() for v in history) for state in states]
    assert all(scores) and scores[0] != scores[1]
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert all(r["truncated_cuts"] == 0 for r in records if "loss" in r)  # fewer than 50 scores: none judged
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["truncation"] == {"judged": 0, "truncations": 0, "cuts": 0}  # no recorded truth here
