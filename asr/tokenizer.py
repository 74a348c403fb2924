"""Tokens: a text vocabulary followed by Whisper's special tokens, in Whisper's layout.

The model's vocabulary is the text vocabulary (ids 0 .. n_text-1) followed by the special tokens,
in the names and order of OpenAI Whisper, so that a model trained here and one of Whisper's own
share one layout (Whisper's BPE has n_text = 50257 and its `<|endoftext|>` is 50257):

    id                          token
    0 .. n_text-1               text pieces (here SentencePiece; only `encode` produces them)
    n_text                      <|endoftext|>          eot
    n_text + 1                  <|startoftranscript|>  sot
    n_text + 2 + i              <|{languages[i]}|>     <|en|> = n_text + 2, ..., <|yue|> last
    n_text + 2 + L              <|translate|>          L = len(languages): 100 (99 before large-v3)
    n_text + 3 + L              <|transcribe|>
    n_text + 4 + L              <|startoflm|>          sot_lm
    n_text + 5 + L              <|startofprev|>        sot_prev
    n_text + 6 + L              <|nospeech|>           no_speech
    n_text + 7 + L              <|notimestamps|>       no_timestamps
    n_text + 8 + L + k          <|{0.02 * k:.2f}|>     k = 0 .. 1500: <|0.00|> (timestamp_begin) .. <|30.00|>

    n_vocab = n_text + 8 + L + 1501

A decoder prompt (`Tokenizer.sot_sequence`) is `<|startoftranscript|> <|de|> <|transcribe|>`,
followed by `<|notimestamps|>` when the target has no timestamps.

`SpecialTokens` knows the layout and nothing about text. `SentencePieceCodec` is the text part:
ids 0 .. n_text-1 <-> str. `Tokenizer` joins the two. Whisper's own BPE can later come in as a
second codec with the same four members (n_text, encode, decode, state).
"""

import functools
import io
import random
import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import sentencepiece as spm

# Whisper's languages, in Whisper's order (the order fixes the ids of the language tokens).
LANGUAGES = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}

TASKS = ("transcribe", "translate")
TIME_PRECISION = 0.02  # seconds between two consecutive timestamp tokens
N_TIMESTAMPS = 1501  # timestamp tokens: <|0.00|> .. <|30.00|>, one chunk of 30 s
# The specials that follow the language tokens, in order.
_AFTER_LANGUAGES = ("translate", "transcribe", "startoflm", "startofprev", "nospeech", "notimestamps")


@dataclass(frozen=True)
class SpecialTokens:
    """The ids of Whisper's special tokens after `n_text` text ids (layout in the module docstring).

    >>> specials = SpecialTokens(n_text=50257, languages=tuple(LANGUAGES)[:99])  # Whisper's multilingual BPE
    >>> specials.eot, specials.language_token("en"), specials.transcribe, specials.timestamp_begin
    (50257, 50259, 50359, 50364)
    """

    n_text: int
    languages: tuple[str, ...] = tuple(LANGUAGES)

    def __post_init__(self):
        object.__setattr__(self, "languages", tuple(self.languages))
        if self.n_text < 1:
            raise ValueError(f"n_text must be positive, got {self.n_text}")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"languages has duplicates: {self.languages}")

    @property
    def eot(self) -> int:
        return self.n_text

    @property
    def sot(self) -> int:
        return self.n_text + 1

    @property
    def translate(self) -> int:
        return self.n_text + 2 + len(self.languages)

    @property
    def transcribe(self) -> int:
        return self.translate + 1

    @property
    def sot_lm(self) -> int:
        return self.translate + 2

    @property
    def sot_prev(self) -> int:
        return self.translate + 3

    @property
    def no_speech(self) -> int:
        return self.translate + 4

    @property
    def no_timestamps(self) -> int:
        return self.translate + 5

    @property
    def timestamp_begin(self) -> int:
        """The id of <|0.00|>; <|30.00|> is timestamp_begin + 1500, the last id."""
        return self.translate + 6

    @property
    def n_vocab(self) -> int:
        return self.timestamp_begin + N_TIMESTAMPS

    @property
    def all_language_tokens(self) -> tuple[int, ...]:
        return tuple(range(self.sot + 1, self.translate))

    @property
    def all_language_codes(self) -> tuple[str, ...]:
        return self.languages

    def language_token(self, code: str) -> int:
        """The id of <|code|>, e.g. language_token("de")."""
        if code not in self.languages:
            raise ValueError(
                f"unknown language code {code!r}; the valid codes are in "
                "SpecialTokens.all_language_codes (asr.tokenizer.LANGUAGES maps them to names)"
            )
        return self.sot + 1 + self.languages.index(code)

    def language_code(self, token_id: int) -> str:
        """The code of a language token: language_code(language_token("de")) == "de"."""
        if not self.sot < token_id < self.translate:
            raise ValueError(f"{token_id} is not a language token ({self.sot + 1} .. {self.translate - 1})")
        return self.languages[token_id - self.sot - 1]

    def timestamp_token(self, seconds: float) -> int:
        """The timestamp token nearest to `seconds`, clamped to <|0.00|> .. <|30.00|>.

        Clamping (rather than an error) lets a segment that starts a hair before its window or
        ends past 30 s still be written; callers that need exact bounds check them themselves.
        """
        step = round(seconds / TIME_PRECISION)
        return self.timestamp_begin + min(max(step, 0), N_TIMESTAMPS - 1)

    def timestamp_seconds(self, token_id: int) -> float:
        """The time of a timestamp token in seconds: timestamp_seconds(timestamp_begin + 54) == 1.08."""
        if not self.is_timestamp(token_id):
            raise ValueError(
                f"{token_id} is not a timestamp token ({self.timestamp_begin} .. {self.n_vocab - 1})"
            )
        return round((token_id - self.timestamp_begin) * TIME_PRECISION, 2)

    def is_timestamp(self, token_id: int) -> bool:
        return self.timestamp_begin <= token_id < self.n_vocab

    def name(self, token_id: int) -> str:
        """The special token's string, as Whisper writes it: "<|endoftext|>", "<|de|>", "<|1.08|>"."""
        if not self.n_text <= token_id < self.n_vocab:
            raise ValueError(f"{token_id} is not a special token ({self.n_text} .. {self.n_vocab - 1})")
        if token_id == self.eot:
            return "<|endoftext|>"
        if token_id == self.sot:
            return "<|startoftranscript|>"
        if token_id < self.translate:
            return f"<|{self.language_code(token_id)}|>"
        if token_id < self.timestamp_begin:
            return f"<|{_AFTER_LANGUAGES[token_id - self.translate]}|>"
        return f"<|{self.timestamp_seconds(token_id):.2f}|>"


# SentencePiece writes a space as "▁" (U+2581) and decodes every "▁" piece back to a space.
_SPACE_MARK = "\u2581"


class SentencePieceCodec:
    """Text <-> text ids 0 .. n_text-1 with a SentencePiece model made by `train_sentencepiece`.

    Round trips are exact for any str: characters the model has not seen are written as their
    UTF-8 bytes (byte pieces), and nothing is normalised. Encoding is concatenative, as with
    Whisper's BPE: decode(encode(a) + encode(b)) == a + b. So, as in Whisper, a word that starts a
    segment carries its leading space (" Hello"); nothing is prepended for you.
    """

    def __init__(self, model: bytes):
        self.model = bytes(model)
        self._sp = spm.SentencePieceProcessor(model_proto=self.model)
        self.n_text = self._sp.get_piece_size()
        self._space_mark_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_MARK.encode()]
        if not all(self._sp.is_byte(i) for i in self._space_mark_ids):
            raise ValueError("the SentencePiece model has no byte pieces: train it with byte_fallback=True")
        # A model trained elsewhere may add a dummy prefix, drop spaces or normalise (NFKC turns
        # "ﬁ" into "fi"); any of them breaks exact, concatenative round trips.
        probe = " a  ﬁ "
        if self.decode(self.encode(probe) + self.encode(probe)) != probe + probe:
            raise ValueError(
                "the SentencePiece model does not round-trip text exactly: train it with train_sentencepiece "
                "(identity normalisation, add_dummy_prefix=False, remove_extra_whitespaces=False)"
            )

    def encode(self, text: str) -> list[int]:
        # A literal "▁" goes in as its byte pieces, which decode to "▁" rather than to a space.
        first, *rest = text.split(_SPACE_MARK)
        ids = self._sp.encode(first)
        for part in rest:
            ids += self._space_mark_ids + self._sp.encode(part)
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text ids only (0 .. n_text-1); invalid UTF-8 from stray byte pieces comes out as U+FFFD."""
        return self._sp.decode(ids)

    def token_bytes(self) -> list[bytes]:
        """Per text id, the UTF-8 bytes it adds to the text: a byte piece its byte, "▁" a space, <unk>
        nothing (it is never produced)."""
        out = []
        for i in range(self.n_text):
            piece = self._sp.id_to_piece(i)
            if self._sp.is_byte(i):
                out.append(bytes([int(piece[3:5], 16)]))  # "<0xD0>"
            elif self._sp.is_unknown(i) or self._sp.is_control(i):
                out.append(b"")
            else:
                out.append(piece.replace(_SPACE_MARK, " ").encode())
        return out

    def state(self) -> dict:
        return {"type": "sentencepiece", "model": self.model}


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 0.9995,
    max_sentences: int = 1_000_000,
    seed: int = 0,
    num_threads: int = 4,
    doubled_letters: int = 0,
    max_piece_length: int = 16,
    min_char_count: int = 0,
) -> bytes:
    """Train a SentencePiece model on `texts`; returns the serialized model (the bytes of a .model file).

    texts: one transcript per item, written as they will be encoded (Whisper's style: " Hello world.").
    vocab_size: an upper bound on n_text. It includes <unk> and the 256 byte pieces, and must leave
        room for every character kept by character_coverage (the rarer ones become byte pieces).
        A corpus too small to fill it gives a smaller vocabulary rather than an error.
    max_sentences: train on a uniform sample of this many texts, drawn with `seed`.
        (SentencePiece's own sampling, input_sentence_size, is not reproducible in version 0.2.3.)
    num_threads: part of the result: the same texts and arguments give the same bytes.
    doubled_letters: each letter written twice in a row at least this many times in the sample becomes
        a piece of its own ("ll", "zz"; 0: none, see ``doubled_letter_pieces``), on top of vocab_size:
        the pieces learnt are as many as without them.
    max_piece_length: the longest piece learnt, in characters (the leading "▁" counts; SentencePiece's
        default is 16). Short pieces keep whole words out of a small vocabulary: a word that is one piece
        is a class of its own for the model to learn, one spelled in pieces shares them with other words.
    min_char_count: each character written at least this many times in the sample is a piece, even where
        character_coverage would leave it to byte pieces (0: coverage alone decides; see
        ``uncovered_characters``), on top of vocab_size like the doubled letters.
    """
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"unknown model_type {model_type!r}; expected 'unigram' or 'bpe'")
    sample = _reservoir_sample((text for text in texts if text), max_sentences, seed)
    if not sample:
        raise ValueError("no texts to train the SentencePiece model on")
    doubled = doubled_letter_pieces(sample, doubled_letters) if doubled_letters > 0 else []
    # SentencePiece takes its required characters first and then the most frequent until the coverage is
    # reached, so every frequent character is required (the uncovered ones alone would push others out).
    counts = _character_counts(sample) if min_char_count > 0 else {}
    required = [c for c, n in counts.items() if n >= min_char_count and not c.isspace()]
    added = _uncovered(counts, character_coverage, min_char_count) if required else []
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sample),
        **({"user_defined_symbols": doubled} if doubled else {}),
        **({"required_chars": "".join(sorted(required))} if required else {}),
        model_writer=model,
        vocab_size=vocab_size + len(doubled) + len(added),
        model_type=model_type,
        character_coverage=character_coverage,
        max_sentencepiece_length=max_piece_length,
        byte_fallback=True,  # unseen characters become UTF-8 byte pieces, never <unk>
        normalization_rule_name="identity",  # exact round trips: no NFKC rewriting
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,  # keeps encoding concatenative; see SentencePieceCodec
        split_digits=True,
        # Only <unk> (never produced, thanks to byte pieces): no control piece can mimic a special token.
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=num_threads,
        minloglevel=1,  # warnings and errors only
    )
    return model.getvalue()


_DOUBLED = re.compile(r"(\w)\1")  # a word character written twice in a row


def doubled_letter_pieces(texts: Iterable[str], min_count: int) -> list[str]:
    """The letters written twice in a row at least ``min_count`` times in ``texts``, each doubled.

    A small vocabulary spells words nearly letter by letter, and CTC can only write a letter twice with
    a blank between the two, which a model learns late: the demo models wrote 35-46 of their test words
    with a doubled letter once (ragazza as ragaza). As a piece of its own, a doubled letter needs no blank.
    """
    counts: dict[str, int] = {}
    for text in texts:
        for match in _DOUBLED.finditer(text):
            counts[match.group(0)] = counts.get(match.group(0), 0) + 1
    return sorted(piece for piece, n in counts.items() if n >= min_count and piece[0].isalpha())


def uncovered_characters(texts: Iterable[str], character_coverage: float, min_count: int) -> list[str]:
    """The characters written at least ``min_count`` times in ``texts`` that ``character_coverage`` leaves
    out: SentencePiece keeps the most frequent characters until they cover that share of all written
    (spaces counted), and spells the rest in UTF-8 byte pieces.

    On a multilingual corpus the rest is a smaller script's capitals and a language's rarer accents:
    on the demo corpus at 0.9995, 15 Cyrillic capitals (8 of them written at least 10 times: every
    Russian sentence that starts with П, Л, О, Д, ... began with two byte pieces that most Cyrillic
    letters share) and Spanish "ó".
    """
    return _uncovered(_character_counts(texts), character_coverage, min_count)


def _uncovered(counts: dict[str, int], character_coverage: float, min_count: int) -> list[str]:
    """``uncovered_characters`` from the texts' ``_character_counts``."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    total, covered, left_out = sum(counts.values()), 0, []
    for character, n in ranked:
        if covered / total >= character_coverage:
            left_out.append(character)
        covered += n
    return sorted(character for character in left_out if counts[character] >= min_count and not character.isspace())


def _character_counts(texts: Iterable[str]) -> dict[str, int]:
    """How often each character, spaces included, is written in ``texts``."""
    counts: dict[str, int] = {}
    for text in texts:
        for character in text:
            counts[character] = counts.get(character, 0) + 1
    return counts


def _reservoir_sample(texts: Iterable[str], k: int, seed: int) -> list[str]:
    """A uniform sample of k texts (all of them if there are fewer), in one pass."""
    rng = random.Random(seed)
    sample = []
    for n, text in enumerate(texts):
        if n < k:
            sample.append(text)
        elif (j := rng.randrange(n + 1)) < k:
            sample[j] = text
    return sample


class Tokenizer:
    """A text codec plus Whisper's special tokens after it (layout in the module docstring).

        tokenizer = Tokenizer.from_sentencepiece(train_sentencepiece(texts, vocab_size=4000))
        tokenizer.sot_sequence("de")  # (sot, <|de|>, <|transcribe|>, <|notimestamps|>)
        tokenizer.decode(tokenizer.encode(" Guten Tag."))  # " Guten Tag."

    A checkpoint carries `tokenizer.state()`, a dict of str, bytes and lists that loads with
    torch.load(weights_only=True); `Tokenizer.from_state` rebuilds the same tokenizer.
    """

    def __init__(self, text: SentencePieceCodec, languages: Sequence[str] = tuple(LANGUAGES)):
        self.text = text
        self.specials = SpecialTokens(text.n_text, tuple(languages))
        self.n_text = self.specials.n_text
        self.n_vocab = self.specials.n_vocab
        self.eot = self.specials.eot
        self.sot = self.specials.sot
        self.translate = self.specials.translate
        self.transcribe = self.specials.transcribe
        self.sot_lm = self.specials.sot_lm
        self.sot_prev = self.specials.sot_prev
        self.no_speech = self.specials.no_speech
        self.no_timestamps = self.specials.no_timestamps
        self.timestamp_begin = self.specials.timestamp_begin

    @classmethod
    def from_sentencepiece(cls, model: bytes, languages: Sequence[str] = tuple(LANGUAGES)) -> "Tokenizer":
        """From the bytes of a SentencePiece .model file, as `train_sentencepiece` returns them."""
        return cls(SentencePieceCodec(model), languages)

    @classmethod
    def from_state(cls, state: dict) -> "Tokenizer":
        if state["type"] != "sentencepiece":
            raise ValueError(f"unknown tokenizer type {state['type']!r}; this version reads 'sentencepiece'")
        return cls.from_sentencepiece(state["model"], state["languages"])

    def state(self) -> dict:
        """{"type": "sentencepiece", "model": bytes, "languages": [codes]}: the languages fix the layout."""
        return {**self.text.state(), "languages": list(self.specials.languages)}

    def language_token(self, code: str) -> int:
        return self.specials.language_token(code)

    def encode(self, text: str) -> list[int]:
        """Text ids only: text that looks like a special token ("<|en|>") is encoded as plain text."""
        return self.text.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the text ids; special ids (timestamps included) and negative ids are skipped."""
        return self.text.decode([i for i in map(int, ids) if 0 <= i < self.n_text])

    def token_bytes(self) -> list[bytes]:
        """Per text id (0 .. n_text-1), the UTF-8 bytes it adds to the text; a byte piece adds one byte,
        which may be part of a character only."""
        return self.text.token_bytes()

    def decode_with_timestamps(self, ids: Iterable[int]) -> str:
        """Like decode, with timestamps written in: "<|0.00|> Hello<|1.08|>"."""
        pieces, text = [], []
        for i in map(int, ids):
            if 0 <= i < self.n_text:
                text.append(i)
            elif self.specials.is_timestamp(i):
                pieces += [self.text.decode(text), self.specials.name(i)]
                text = []
        pieces.append(self.text.decode(text))
        return "".join(pieces)

    def sot_sequence(
        self, language: str | None = None, task: str = "transcribe", timestamps: bool = False
    ) -> tuple[int, ...]:
        """The decoder prompt: (sot, <|language|>, <|task|>), then <|notimestamps|> unless timestamps.

        With language None it is (sot,) alone, the prompt that asks the model for the language;
        task and timestamps then do not enter it (task is still checked).
        """
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        if language is None:
            return (self.sot,)
        task_token = self.transcribe if task == "transcribe" else self.translate
        prompt = (self.sot, self.language_token(language), task_token)
        return prompt if timestamps else prompt + (self.no_timestamps,)


T = TypeVar("T")


def per_tokenizer(table: Callable[[Tokenizer], T]) -> Callable[[Tokenizer], T]:
    """``table(tokenizer)``, worked out once per tokenizer and kept while the tokenizer lives: for the
    tables decoding reads over the whole vocabulary (a 50k-piece vocabulary takes a while)."""
    cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @functools.wraps(table)
    def cached(tokenizer: Tokenizer) -> T:
        if tokenizer not in cache:
            cache[tokenizer] = table(tokenizer)
        return cache[tokenizer]

    return cached
