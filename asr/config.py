"""Frozen configuration dataclasses, loaded from YAML with command-line ``key=value`` overrides.

A run's whole configuration is one :class:`Config`. YAML maps onto it section by section::

    model:
      preset: tiny          # configs/model/tiny.yaml gives the base values ...
      n_text_layer: 2       # ... and any key written here overrides them
    optim:
      lr: 1.0e-3

Overrides use dotted paths and YAML syntax for values: ``optim.lr=3e-4 data.train=[a.jsonl.gz,b.jsonl.gz]``.
Every key is checked against the dataclass fields and every value against the field's type, so a
typo is an error naming the key and the file it came from, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
MODEL_PRESET_DIR = CONFIG_DIR / "model"
# The cleaning rules that judge only the transcript (asr.data.clean): a cut they drop may keep its
# translation (clean.keep_translations), and their drops can be left to the model (clean.defer_rules).
TRANSCRIPT_RULES = frozenset(
    {"speaking_rate", "rate_outlier", "upper_case", "lower_case", "no_punctuation", "duplicate_text"}
)
TRUNCATE_MIN_HISTORY = 50  # loss truncation: scores of a language seen before any of its cuts is judged


class ConfigError(ValueError):
    """A configuration file or override that does not fit the dataclasses."""


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape (Whisper's dimensions, without the vocabulary size, which the tokenizer
    sets) and options that change which parameters exist."""

    preset: str | None = None  # a name in configs/model/ or a path to a YAML file of these keys
    n_mels: int = 80
    n_audio_ctx: int = 1500  # encoder positions: 30 s at 50 per second
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4
    n_text_ctx: int = 448  # decoder positions
    n_text_state: int = 384
    n_text_head: int = 6
    n_text_layer: int = 4
    ctc_head: bool = False  # a linear CTC head on the encoder output (joint CTC/attention training)
    # A translation CTC branch (optim.translation_ctc_weight; asr.model.TranslationCTC): its
    # self-attention blocks, and whether its gradient stops at the encoder output
    translation_ctc_head: bool = False
    n_translation_ctc_layer: int = 0
    translation_ctc_detached: bool = False
    # Mel frames per encoder position: 2 is Whisper's (50 per second); 4 (25 per second) halves the
    # encoder's work; with it, n_audio_ctx 750 covers 30 s.
    audio_stride: int = 2


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes the encoder's input."""

    # Whisper always pads the input to 30 s; without padding a batch of 3 s clips costs 3 s of encoder work.
    pad_to_30s: bool = False


@dataclass(frozen=True)
class TokenizerConfig:
    """The SentencePiece text vocabulary trained from the manifests' text."""

    path: str | None = None  # an existing .model file; trained from the training text when absent
    vocab_size: int = 4000  # text pieces; Whisper's special tokens come on top
    model_type: Literal["unigram", "bpe"] = "unigram"
    character_coverage: float = 0.9995
    # Letters written twice in a row at least this many times in the training text get a piece of their
    # own ("ll", "zz"; 0: none): with a vocabulary that spells letter by letter, CTC needs a blank
    # between two equal pieces and writes many doubled letters once (asr.tokenizer.doubled_letter_pieces).
    # They come on top of vocab_size.
    doubled_letters: int = 0
    # The longest piece learnt, in characters ("▁" included; SentencePiece's default 16). On a small
    # vocabulary short pieces keep whole words from becoming classes of their own that the model learns
    # one by one (asr.tokenizer.train_sentencepiece).
    max_piece_length: int = 16
    # Characters written at least this many times in the training text are pieces even where
    # character_coverage would spell them in byte pieces (0: coverage alone; asr.tokenizer.uncovered_characters),
    # on top of vocab_size. On the demo corpus at 10: Russian's sentence-initial capitals and Spanish "ó",
    # 9 pieces; Russian test WER 15.6% -> 12.4% on the config's seed but 21.3% -> 29.1% on seed 2
    # (runs/t-mc, runs/t-mc-s2), so it stays off.
    min_char_count: int = 0

    def __post_init__(self):
        if self.min_char_count < 0:
            raise ValueError(f"min_char_count must be >= 0, got {self.min_char_count}")
        if self.max_piece_length < 1:
            raise ValueError(f"max_piece_length must be at least 1, got {self.max_piece_length}")


@dataclass(frozen=True)
class DataConfig:
    """Which manifests feed training and validation, and how batches are formed."""

    train: tuple[str, ...] = ()  # lhotse CutSet manifests (.jsonl.gz) or Shar directories
    dev: tuple[str, ...] = ()
    max_duration: float = 200.0  # seconds of audio per batch
    quadratic_duration: float | None = None  # lhotse: a cut of this many seconds counts double
    num_buckets: int = 10
    num_workers: int = 2
    # How a cut becomes a decoder sequence (asr.data.sequence): the chance of each form.
    timestamp_rate: float = 0.5  # timestamp tokens around each segment, else <|notimestamps|>
    prompt_rate: float = 0.5  # <|startofprev|> + the previous window's text, where there is one
    translate_rate: float = 0.5  # X->English translation, for cuts that carry a translation
    max_prompt_tokens: int = 223  # Whisper's limit: half the decoder context, less one
    language_temperature: float = 1.0  # sample language l with p ~ n_l ** (1 / T): 1 keeps the data's mix
    nospeech_rate: float = 1.0  # the share of no-speech cuts kept for training
    # Augmentation, training only.
    spec_augment: bool = True
    n_freq_masks: int = 2
    freq_mask_width: int = 27  # mel bins, at most
    n_time_masks: int = 2
    time_mask_width: int = 40  # mel frames (10 ms each), at most
    speed_perturb: tuple[float, ...] = ()  # e.g. [0.9, 1.1]: each cut is sped up or down by one of these...
    speed_perturb_rate: float = 0.0  # ... with this chance
    noise: tuple[str, ...] = ()  # manifests of noise cuts (e.g. MUSAN) mixed into training audio...
    noise_rate: float = 0.0  # ... with this chance
    noise_snr: tuple[float, float] = (10.0, 30.0)  # dB, drawn uniformly


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up then decay, and the loss's weights."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.1
    warmup_steps: int = 500
    max_steps: int = 10000
    # A budget of training time in minutes (steps, saves and dev validations; 0: none). Where max_steps
    # would not fit at the pace measured so far, the schedule ends earlier, at the last step that fits,
    # its learning rate decaying to 0 there. Re-fitted to the mean pace as the run goes.
    max_minutes: float = 0.0
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    ctc_weight: float = 0.0  # 0 disables the CTC loss
    # The first this many steps train the CTC loss alone (weight 1), so that a from-scratch encoder
    # learns to hear before the decoder can lean on the text it has learnt; then ctc_weight.
    ctc_only_steps: int = 0
    # The translation CTC loss's weight (model.translation_ctc_head), added on top of the other two
    # terms, the CTC-only steps included. Joint decoding with the branch is what translates better.
    translation_ctc_weight: float = 0.0
    # Loss truncation (asr.truncation): from this step on, a cut whose CTC loss per target token is an
    # outlier among its language's recent cuts takes no loss (0: never). Needs the CTC head.
    truncate_from_step: int = 0
    truncate_mads: float = 3.0  # outlier: log loss above the median plus this many scaled MADs
    truncate_history: int = 300  # the recent cuts per language the median and MAD are taken over
    # A cut once left out stays out for the rest of the run, its speed-perturbed copies with it (they
    # share its transcript); false: it is judged again each time it comes round.
    truncate_sticky: bool = False
    # With the translation CTC term: each translation judged the same way by that head's loss, and a cut
    # whose transcript is left out keeps its translation terms unless its translation is an outlier too
    # (asr.loss); false: a cut whose transcript is left out takes no loss in any term.
    truncate_translations: bool = True
    # The bound for the cuts the cleaning deferred to the model (clean.defer_rules: custom["suspect_by"]),
    # in scaled MADs above the median of the other cuts' scores: from truncate_from_step on, their
    # transcript takes loss only below this bound. Lower than truncate_mads, since a rule already speaks
    # against them; their own scores stay out of the median and MAD.
    truncate_suspect_mads: float = 3.0
    # Whether a suspect's transcript takes no loss before truncate_from_step (while the model cannot judge
    # it yet); false: it trains as any other until then.
    truncate_hold_suspects: bool = True

    def __post_init__(self):
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if self.translation_ctc_weight < 0:
            raise ValueError(f"translation_ctc_weight must be at least 0, got {self.translation_ctc_weight}")
        if self.max_minutes < 0:
            raise ValueError(f"max_minutes must be at least 0 (0: no budget), got {self.max_minutes}")
        if self.ctc_only_steps < 0:
            raise ValueError(f"ctc_only_steps must be at least 0, got {self.ctc_only_steps}")
        if self.ctc_only_steps and self.ctc_weight == 0:
            raise ValueError("ctc_only_steps needs the CTC loss: set ctc_weight above 0 (and model.ctc_head)")
        if self.truncate_from_step < 0 or self.truncate_mads <= 0 or self.truncate_history < TRUNCATE_MIN_HISTORY:
            raise ValueError(f"need truncate_from_step >= 0, truncate_mads > 0 and truncate_history >= "
                             f"{TRUNCATE_MIN_HISTORY}, got "
                             f"{self.truncate_from_step}, {self.truncate_mads}, {self.truncate_history}")


@dataclass(frozen=True)
class TrainConfig:
    """The run: where it writes, how often it logs, validates and saves, and its numerics."""

    output_dir: str = "runs/default"
    seed: int = 1234
    init_from: str | None = None  # a checkpoint of this project or OpenAI's to start from (weights only)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Mixed precision by torch.autocast (DeepSpeed's torch_autocast) with fp32 weights and optimizer:
    # linear and convolution layers compute in the lower precision. Needs precision fp32. "auto": bf16
    # where the hardware computes it natively (a GPU with bf16; a CPU with AVX512-BF16 or AMX), else
    # none: on a CPU without them bf16 is emulated, 23 times slower than fp32 (asr.train.autocast_dtype).
    autocast: Literal["none", "bf16", "fp16", "auto"] = "none"
    zero_stage: Literal[0, 1, 2, 3] = 0
    cpu_processes: int = 1  # train.sh on a machine without GPUs: this many gloo processes
    deepspeed_config: str | None = None  # a DeepSpeed JSON; default configs/deepspeed/zero<stage>.json
    grad_accum: int = 1
    activation_checkpointing: bool = False
    compile: bool = False
    log_every: int = 10
    eval_every: int = 500  # 0: validate only at the end
    save_every: int = 500  # 0: save only at the end
    keep_last: int = 2  # checkpoints kept besides the best
    best_metric: str = "dev_loss"  # lower is better: dev_loss or dev_wer
    dev_decode_cuts: int = 64  # dev cuts decoded greedily for WER/CER at each validation
    max_decode_tokens: int = 200
    nonfinite_limit: int = 10  # consecutive NaN/inf losses that stop the run


@dataclass(frozen=True)
class CleanConfig:
    """Which rules run and their thresholds. Plain field types, so that it loads from YAML.

    Per-language bounds are strings ``"lang:min:max"``; ``"*"`` stands for every language not listed.
    """

    # duration: the encoder sees 30 s windows; clips under 0.3 s are nearly always segmentation slips.
    check_duration: bool = True
    min_duration: float = 0.3  # seconds
    max_duration: float = 30.0  # seconds

    # unreadable_audio: decodes every cut's audio, so it is off unless asked for.
    check_audio: bool = False

    # empty_text
    check_empty_text: bool = True

    # text_too_long: the whole cut's text is one decoder target.
    check_text_length: bool = True
    # With a tokenizer: text tokens + 2 timestamp tokens per supervision, against the decoder context
    # (448) less <|startoftranscript|>, language, task and <|endoftext|>.
    max_text_tokens: int = 444
    max_text_chars: int = 1000  # without a tokenizer: a loose bound (30 s at the highest speaking rate)

    # speaking_rate: non-space, non-punctuation characters per second of the supervision.
    # Speech runs at ~10-20 such characters per second in alphabetic scripts and ~3-7 in Chinese,
    # Japanese and Korean (a character per syllable); the bounds leave room for pauses and fast talkers.
    check_speaking_rate: bool = True
    chars_per_second: tuple[str, ...] = ("*:3:30", "zh:1:10", "yue:1:10", "ja:1:12", "ko:1:12")
    max_tokens_per_second: float = 15.0  # only with a tokenizer; 0 turns it off

    # rate_outlier: bounds learnt from the corpus, per language, in the log domain (so that half and
    # double the usual rate are equally far). Languages with fewer than rate_outlier_min_count
    # supervisions are not judged: their median says too little.
    check_rate_outliers: bool = True
    rate_outlier_mads: float = 2.9  # 2.9: precision >= 0.91 and recall >= 0.70 on demo seeds 0-4
    rate_outlier_min_count: int = 50

    # upper_case / lower_case: only texts with at least this many words holding cased letters,
    # so that "NASA" or "BBC News" stay.
    check_upper_case: bool = True
    check_lower_case: bool = True
    case_min_words: int = 4

    # no_punctuation: subtitle lines often end without a full stop, so only long texts are judged.
    check_punctuation: bool = True
    punctuation_min_words: int = 20
    punctuation_min_chars: int = 40  # in scripts written without spaces
    punctuation_exempt_languages: tuple[str, ...] = ("th", "lo")  # written without punctuation
    # A language's own style: where more than style_majority of the texts a style rule (upper_case,
    # lower_case, no_punctuation) judges in one language break it, and at least style_min_texts are
    # judged, that is how the corpus writes the language (LibriSpeech: upper case, no punctuation), not
    # a sign of machine transcripts: the rule is off for that language, and the report says so. 1.0
    # never turns a rule off.
    style_majority: float = 0.5
    style_min_texts: int = 50

    # language_mismatch: py3langid, restricted to lid_languages (default: the labelled languages found
    # in the input) plus English, judges texts of at least lid_min_words words (lid_min_chars characters
    # in scripts without spaces) and calls a mismatch only when it gives another language at least
    # lid_min_prob (its probabilities are normalised over the candidates).
    check_language: bool = True
    translation_pairs: bool = True  # English text on non-English audio: keep as X->English, not drop
    lid_languages: tuple[str, ...] = ()
    lid_min_words: int = 4
    lid_min_chars: int = 8
    lid_min_prob: float = 0.9

    # duplicate_text
    check_duplicates: bool = True
    duplicate_max_copies: int = 2  # a text on more recordings than this loses all its copies
    duplicate_min_chars: int = 20  # normalised characters; shorter texts are never grouped

    # A cut that only the transcript's rules drop (speaking_rate, rate_outlier, upper_case, lower_case,
    # no_punctuation, duplicate_text) and whose every supervision records an English translation keeps
    # that translation and trains X->English only, unless the translation's own rate (characters per
    # second of the audio, learnt per labelled language like rate_outlier's) is an outlier. Off by
    # default, on in configs/demo.yaml: on the demo corpus it kept 417 more windows for translation (16 of
    # them with another clip's translation), and with pieces of at most 3 characters test BLEU rose by 3.2
    # and 5.2 points on two seeds at the same WER (with pieces of up to 16, BLEU 49.7 against 52.0).
    keep_translations: bool = False

    # Labels mended instead of dropped, where the rules that fired say what is wrong and the rest of the
    # label is sound (off by default). repair_case: a text all in upper or lower case gets each word's
    # most common form in the corpus's normally cased texts of its language, a capital first letter and
    # the language's usual final mark where its texts mostly have them (commas stay lost).
    # relabel_language: a text identified (lid_min_prob) as another non-English language of the corpus
    # than its label gets that language as its label, trusting the text over the metadata. Only a cut
    # that nothing else drops is mended; mended cuts record "repaired_by", and each changed supervision
    # its "original_text" / "original_language".
    repair_case: bool = False
    relabel_language: bool = False

    # Rules whose drops are left to the model: a cut that only these rules fire on is kept and marked
    # custom["suspect_by"] / ["suspect_reasons"], and loss truncation decides (optim.truncate_suspect_mads):
    # from optim.truncate_from_step on, its transcript takes loss only while the CTC head finds it no worse
    # than that bound (before, optim.truncate_hold_suspects). For the rules whose errors the CTC head can
    # hear (a transcript with words missing, added or swapped, or of another clip: speaking_rate,
    # rate_outlier, duplicate_text), not for those it cannot (case, punctuation, the language label). Only
    # the transcript's rules can be deferred; a cut whose recorded translation is a rate outlier is
    # dropped as with keep_translations.
    defer_rules: tuple[str, ...] = ()

    def __post_init__(self):
        if not 0 <= self.min_duration <= self.max_duration:
            raise ValueError(f"need 0 <= min_duration <= max_duration, got {self.min_duration}, {self.max_duration}")
        if not 0 < self.lid_min_prob <= 1:
            raise ValueError(f"lid_min_prob must be in (0, 1], got {self.lid_min_prob}")
        if self.duplicate_max_copies < 1:
            raise ValueError(f"duplicate_max_copies must be at least 1, got {self.duplicate_max_copies}")
        self.rate_bounds("*")  # parses chars_per_second, so that a bad entry fails here
        if unknown := sorted(set(self.defer_rules) - TRANSCRIPT_RULES):
            raise ValueError(f"defer_rules can only hold rules that judge the transcript alone "
                             f"({', '.join(sorted(TRANSCRIPT_RULES))}), not {', '.join(unknown)}")

    def rate_bounds(self, language: str | None) -> tuple[float, float]:
        """(min, max) characters per second for ``language``, from ``chars_per_second``."""
        table = _parse_bounds(self.chars_per_second)
        return table.get(language or "*", table["*"])


@dataclass(frozen=True)
class JobConfig:
    """The stages ``./train.sh`` runs around training (``asr.job``): with ``corpus`` set, the offline demo
    corpus is made there and cleaned first, and the model is evaluated on its test split afterwards.

    The data section's manifests default to the corpus's: ``train`` to the cleaning's kept windows (or
    all training windows with ``clean: false``), ``dev`` to the dev windows, ``test`` to the test cuts,
    and ``noise`` (where ``data.noise_rate`` > 0) to the training split's no-speech clips.

    With ``score_steps`` > 0 the job has two rounds: the first trains on ``data.train`` (the config with
    :func:`first_round_overrides`), and the run itself trains on the scored manifest,
    :func:`scored_manifest`, which takes the place of ``data.train``; with ``relabel`` that manifest also
    holds the windows the first round's model re-transcribed.
    """

    corpus: str | None = None  # a folder for the demo corpus (asr-prepare demo); unset: no data stages
    hours: float = 6.0  # hours of training speech (the demo corpus's default, asr.data.demo.DEFAULT_HOURS)
    seed: int = 0
    corruption: float = 0.2  # share of training clips given a wrong label; 0 switches it off
    eval_clips: int = 30  # the fewest speech clips per language in dev and in test
    clean: bool = True  # apply the cleaning rules (the clean: section) and train on what they keep
    test: tuple[str, ...] = ()  # manifests asr-eval scores the exported model on after training
    example: bool = True  # transcribe one long test recording at the end, to show the result
    # Two rounds: > 0 trains a first round of this many steps on data.train (in <output_dir>/round1), scores
    # every training cut with its CTC head (asr.scoring) and trains the run on the cuts it does not flag.
    score_steps: int = 0
    score_mads: float = 3.0  # flag a cut this many scaled MADs above its language's median score
    # Two rounds only: the first round's model also re-transcribes the windows whose transcript cleaning
    # dropped (asr.relabel), and the second round trains on them too (README, Relabelling).
    relabel: bool = False
    first_round: tuple[str, ...] = ()  # key=value overrides for the first round only
    # Two rounds only: the second round starts from the first round's model and vocabulary (train.init_from,
    # tokenizer.path: <output_dir>/round1/model.pt and tokenizer.model) rather than from scratch, and
    # second_round gives it its own, shorter schedule (README, Relabelling with a trained model).
    warm_start: bool = False
    # key=value overrides for the second round only, the run itself: applied after the command line's, and
    # only while score_steps > 0, so the first round (job.score_steps=0) never sees them.
    second_round: tuple[str, ...] = ()

    def __post_init__(self):
        if self.hours <= 0 or not 0 <= self.corruption <= 1:
            raise ValueError(f"need hours > 0 and corruption in [0, 1], got {self.hours}, {self.corruption}")
        if self.score_steps < 0 or self.score_mads <= 0:
            raise ValueError(f"need score_steps >= 0 and score_mads > 0, got {self.score_steps}, {self.score_mads}")
        if self.relabel and not self.score_steps:
            raise ValueError("relabel needs two rounds: job.score_steps > 0, the first round's model relabelling")
        if self.warm_start and not self.score_steps:
            raise ValueError("warm_start needs two rounds: job.score_steps > 0, the first round's model to start from")
        for name in ("first_round", "second_round"):
            if any("=" not in item for item in getattr(self, name)):
                raise ValueError(f"{name} entries are key=value overrides, got {list(getattr(self, name))}")


@functools.lru_cache(maxsize=16)
def _parse_bounds(entries: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    table = {"*": (0.0, float("inf"))}
    for entry in entries:
        try:
            language, low, high = entry.split(":")
            low, high = float(low), float(high)
        except ValueError:
            raise ValueError(f"chars_per_second entries are 'lang:min:max', got {entry!r}") from None
        if not 0 <= low <= high:
            raise ValueError(f"chars_per_second entry {entry!r} needs 0 <= min <= max")
        table[language.strip()] = (low, high)
    return table


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    job: JobConfig = field(default_factory=JobConfig)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or start from the defaults), apply ``key=value`` overrides, and validate."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        raw = _read_yaml(Path(path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
    sources = {"": source}
    for item in overrides:
        sources[item.partition("=")[0].strip()] = f"override {item!r}"
    for item in _second_round(raw):
        key, value = _parse_override(item)
        if key.startswith("job."):
            raise ConfigError(f"job.second_round: {item!r}: the job's own settings are the same in both rounds")
        _set_dotted(raw, key, value)
        sources[key] = f"job.second_round {item!r}"
    return with_job_defaults(from_dict(Config, _expand_model_preset(raw, source), sources))


def _second_round(raw: Mapping[str, Any]) -> list[str]:
    """A two-round job's overrides for its second round (``job.second_round`` while ``job.score_steps`` > 0),
    the run itself; [] for one round. A value of the wrong type is left for JobConfig to report."""
    job = raw.get("job")
    if not isinstance(job, Mapping) or not job.get("score_steps") or not isinstance(job.get("second_round"), list):
        return []
    return [item for item in job["second_round"] if isinstance(item, str) and "=" in item]


def with_job_defaults(config: Config) -> Config:
    """Fill the data manifests a demo-corpus job leaves unset, and point a two-round job's training at
    its first round's scored cuts, with ``job.warm_start`` its start at the first round's model (see
    :class:`JobConfig`)."""
    if config.job.corpus:
        config = _with_corpus_defaults(config)
    if config.job.score_steps:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, train=(str(scored_manifest(config)),)))
    if config.job.warm_start:
        first = first_round_dir(config)
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, init_from=str(first / "model.pt")),
            tokenizer=dataclasses.replace(config.tokenizer, path=str(first / "tokenizer.model")))
    return config


SCORED, RELABELLED, KEPT = "scored", "relabelled", "kept_cuts.jsonl.gz"  # a two-round job's first-round outputs


def first_round_dir(config: Config) -> Path:
    """Where a two-round job's first round trains, its scoring writes (``scored/``) and its relabelling
    (``relabelled/``)."""
    return Path(config.train.output_dir) / "round1"


def scored_manifest(config: Config) -> Path:
    """The second round's training set: the cuts the first round's model did not flag (``scored/``), with
    ``job.relabel`` and the windows it re-transcribed (``relabelled/``)."""
    if config.job.relabel:
        return first_round_dir(config) / RELABELLED / "train_cuts.jsonl.gz"
    return first_round_dir(config) / SCORED / KEPT


def first_round_overrides(config: Config) -> list[str]:
    """The overrides that turn a two-round job's config into its first round's: ``job.score_steps`` steps
    on the configured training set, in :func:`first_round_dir`, with dev loss but no dev decoding (the
    round's model only scores cuts), then ``job.first_round``'s own."""
    return ["job.score_steps=0", "job.relabel=false", "job.warm_start=false", f"train.output_dir={first_round_dir(config)}",
            f"optim.max_steps={config.job.score_steps}", "train.eval_every=0", "train.dev_decode_cuts=0",
            *config.job.first_round]


def _with_corpus_defaults(config: Config) -> Config:
    corpus = config.job.corpus
    train = f"{corpus}/clean/kept_cuts.jsonl.gz" if config.job.clean else f"{corpus}/train_windows.jsonl.gz"
    noise = config.data.noise or ((f"{corpus}/train_nospeech_cuts.jsonl.gz",) if config.data.noise_rate > 0 else ())
    data = dataclasses.replace(config.data, train=config.data.train or (train,),
                               dev=config.data.dev or (f"{corpus}/dev_windows.jsonl.gz",), noise=noise)
    job = dataclasses.replace(config.job, test=config.job.test or (f"{corpus}/test_cuts.jsonl.gz",))
    return dataclasses.replace(config, data=data, job=job)


def from_dict(cls: type, raw: Mapping[str, Any], sources: Mapping[str, str] | None = None, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, checking every key and value type.

    ``sources`` maps dotted keys to where they came from (a file or an override) for error messages.
    """
    sources = sources or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{_where(prefix, sources)}: expected a mapping of keys for {prefix or 'the config'}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(
                f"{_where(dotted, sources)}: unknown key {dotted!r}; "
                f"valid keys{' under ' + prefix[:-1] if prefix else ''}: {', '.join(sorted(names))}"
            )
        kwargs[key] = _coerce(value, hints[key], dotted, sources)
    try:
        return cls(**kwargs)
    except ValueError as e:  # a dataclass's own check of its values (__post_init__)
        raise ConfigError(f"{_where(prefix, sources)}: {prefix[:-1] or 'config'}: {e}") from None


def to_dict(config) -> dict[str, Any]:
    """A plain, YAML- and checkpoint-safe dict (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config, which :func:`load_config` reads back to an equal Config."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def model_preset(name: str) -> ModelConfig:
    """The ModelConfig of a preset in configs/model/ (``tiny``, ``base``, ..., ``demo``)."""
    source = str(_preset_path(name, "<preset>"))
    return from_dict(ModelConfig, _expand_model_preset({"model": {"preset": name}}, source)["model"],
                     {"": source}, "model.")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    return raw


def _preset_path(name: str, source: str) -> Path:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    preset = MODEL_PRESET_DIR / f"{name}.yaml"
    if not preset.exists():
        known = ", ".join(sorted(p.stem for p in MODEL_PRESET_DIR.glob("*.yaml")))
        raise ConfigError(f"{source}: unknown model preset {name!r}; known presets: {known}")
    return preset


def _expand_model_preset(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Replace ``model.preset`` by the preset's values, with the keys written beside it on top."""
    model = raw.get("model")
    if not isinstance(model, dict) or model.get("preset") is None:
        return raw
    preset_file = _preset_path(str(model["preset"]), source)
    preset = _read_yaml(preset_file)
    if "preset" in preset:
        raise ConfigError(f"{preset_file}: a preset cannot name another preset")
    # Validate the preset on its own so that a bad key names the preset file.
    from_dict(ModelConfig, preset, {"": str(preset_file)}, "model.")
    return {**raw, "model": {**preset, **model}}


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=3e-4")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _where(dotted: str, sources: Mapping[str, str]) -> str:
    return sources.get(dotted) or sources.get("", "<config>")


def _coerce(value: Any, hint: Any, dotted: str, sources: Mapping[str, str]) -> Any:
    """Check ``value`` against the type hint, converting only where no information is lost."""

    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(f"{_where(dotted, sources)}: {dotted} must be {expected}, got {value!r}")

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, sources, f"{dotted}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, dotted, sources)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        fail("one of " + ", ".join(repr(a) for a in args))
    if origin in (tuple, list):
        variable_length = origin is list or (len(args) == 2 and args[1] is Ellipsis)
        if variable_length and value is not None and not isinstance(value, (list, tuple)):
            value = [value]  # a single manifest needs no brackets: data.train=cuts.jsonl.gz
        if not isinstance(value, (list, tuple)):
            fail("a list")
        if not variable_length:
            if len(value) != len(args):
                fail(f"a list of {len(args)} values")
            return tuple(_coerce(v, a, f"{dotted}[{i}]", sources) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{dotted}[{i}]", sources) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        fail("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail("an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        fail("a number")
    if hint is str:
        if isinstance(value, str):
            return value
        fail("a string")
    raise ConfigError(f"{_where(dotted, sources)}: {dotted} has a type the loader does not know: {hint}")
