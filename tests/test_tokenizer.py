import io

import pytest
import sentencepiece as spm
import torch

from asr.config import load_config
from asr.tokenizer import (
    LANGUAGES,
    N_TIMESTAMPS,
    SentencePieceCodec,
    SpecialTokens,
    Tokenizer,
    doubled_letter_pieces,
    uncovered_characters,
    train_sentencepiece,
)

# A few sentences per script, written the way targets are encoded (leading space, as in Whisper).
SENTENCES = [
    " The quick brown fox jumps over the lazy dog.",
    " She sells sea shells by the sea shore, doesn't she?",
    " In 1969, 3 astronauts flew 384,400 km to the Moon!",
    " Le cœur a ses raisons que la raison ne connaît point.",
    " Où est la bibliothèque ? À côté de l'église, près du château.",
    " Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    " Die Straße ist naß, größer und schöner als gestern.",
    " Tiếng Việt có dấu rất đẹp và phong phú.",
    " Chúng tôi đang học tiếng Việt ở Hà Nội.",
    " Привет, мир! Как дела сегодня?",
    " Москва — столица России, а Киев — столица Украины.",
    " 今天天气很好，我们去公园散步吧。",
    " 我喜欢学习中文和历史。",
    " 日本語の文章にはひらがなとカタカナと漢字があります。",
    " 東京はとても大きい都市です。",
    " مرحبا بالعالم، كيف حالك اليوم؟",
    " اللغة العربية جميلة جدا.",
    " नमस्ते दुनिया, आप कैसे हैं?",
    " भारत एक विशाल देश है।",
    " Γειά σου κόσμε, τι κάνεις σήμερα;",
    " Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    " Numbers: 0 1 2 3 4 5 6 7 8 9, 3.14159 and 42% (approx.) — ok?",
]
CORPUS = SENTENCES * 20
VOCAB_SIZE = 800


@pytest.fixture(scope="module")
def model() -> bytes:
    return train_sentencepiece(CORPUS, vocab_size=VOCAB_SIZE, num_threads=1)


@pytest.fixture(scope="module")
def tokenizer(model) -> Tokenizer:
    return Tokenizer.from_sentencepiece(model)


def test_special_token_layout(tokenizer):
    n = tokenizer.n_text
    assert 257 < n <= VOCAB_SIZE  # <unk>, 256 byte pieces, then what the corpus gave
    assert tokenizer.eot == n
    assert tokenizer.sot == n + 1
    assert tokenizer.language_token("en") == n + 2
    assert tokenizer.language_token("zh") == n + 3
    assert tokenizer.language_token("yue") == n + 2 + 99
    assert tokenizer.translate == n + 102
    assert tokenizer.transcribe == n + 103
    assert tokenizer.sot_lm == n + 104
    assert tokenizer.sot_prev == n + 105
    assert tokenizer.no_speech == n + 106
    assert tokenizer.no_timestamps == n + 107
    assert tokenizer.timestamp_begin == n + 108
    assert tokenizer.n_vocab == n + 108 + 1501
    assert tokenizer.specials.timestamp_token(30.0) == tokenizer.n_vocab - 1


def test_special_token_names(tokenizer):
    s = tokenizer.specials
    names = [s.name(i) for i in range(s.n_text, s.n_vocab)]
    assert names[:4] == ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>"]
    assert names[101:110] == [
        "<|yue|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        "<|0.00|>",
        "<|0.02|>",
    ]
    assert names[-1] == "<|30.00|>"
    assert len(set(names)) == len(names)
    with pytest.raises(ValueError, match="not a special token"):
        s.name(s.n_text - 1)
    with pytest.raises(ValueError, match="not a special token"):
        s.name(s.n_vocab)


def test_language_tokens(tokenizer):
    s = tokenizer.specials
    assert s.all_language_codes == tuple(LANGUAGES)
    assert s.all_language_tokens == tuple(range(s.sot + 1, s.translate))
    assert [s.language_code(t) for t in s.all_language_tokens] == list(LANGUAGES)
    with pytest.raises(ValueError, match="'xx'.*all_language_codes"):
        s.language_token("xx")
    with pytest.raises(ValueError, match="not a language token"):
        s.language_code(s.translate)


def test_layout_matches_whisper_ids():
    # Whisper's multilingual BPE: 50257 text tokens, 99 languages (100 from large-v3 on).
    s = SpecialTokens(n_text=50257, languages=tuple(LANGUAGES)[:99])
    assert (s.eot, s.sot, s.language_token("en")) == (50257, 50258, 50259)
    assert (s.translate, s.transcribe, s.sot_lm, s.sot_prev) == (50358, 50359, 50360, 50361)
    assert (s.no_speech, s.no_timestamps, s.timestamp_begin) == (50362, 50363, 50364)
    assert s.n_vocab == 51865  # Whisper's multilingual n_vocab before large-v3
    assert SpecialTokens(n_text=50257).n_vocab == 51866  # large-v3, with <|yue|>


def test_layout_matches_whisper_package():
    whisper_tokenizer = pytest.importorskip("whisper.tokenizer")
    assert LANGUAGES == whisper_tokenizer.LANGUAGES
    assert list(LANGUAGES) == list(whisper_tokenizer.LANGUAGES)
    for num_languages in (99, 100):
        theirs = whisper_tokenizer.get_tokenizer(multilingual=True, num_languages=num_languages)
        ours = SpecialTokens(n_text=50257, languages=tuple(LANGUAGES)[:num_languages])
        # Every special token's name maps to the same id in both.
        assert {ours.name(i): i for i in range(ours.n_text, ours.n_vocab)} == theirs.special_tokens
        assert ours.all_language_tokens == tuple(sorted(theirs.all_language_tokens))
        names = ("eot", "sot", "translate", "transcribe", "sot_lm", "sot_prev", "no_speech", "no_timestamps")
        assert [getattr(ours, name) for name in names] == [getattr(theirs, name) for name in names]
        assert ours.timestamp_begin == theirs.timestamp_begin


def test_sot_sequence_matches_whisper_package(tokenizer):
    whisper_tokenizer = pytest.importorskip("whisper.tokenizer")
    for language, task in (("de", "transcribe"), ("fr", "translate"), ("yue", "transcribe")):
        theirs = whisper_tokenizer.get_tokenizer(True, num_languages=100, language=language, task=task)
        their_names = {i: name for name, i in theirs.special_tokens.items()}
        for timestamps, their_sequence in (
            (True, theirs.sot_sequence),
            (False, theirs.sot_sequence_including_notimestamps),
        ):
            ours = tokenizer.sot_sequence(language, task, timestamps)
            assert [tokenizer.specials.name(i) for i in ours] == [their_names[i] for i in their_sequence]
            assert [i - tokenizer.n_text for i in ours] == [i - 50257 for i in their_sequence]


def test_sot_sequence(tokenizer):
    t = tokenizer
    assert t.sot_sequence() == (t.sot,)
    assert t.sot_sequence(None, "translate", True) == (t.sot,)
    assert t.sot_sequence("de", "transcribe", False) == (t.sot, t.n_text + 4, t.transcribe, t.no_timestamps)
    assert t.sot_sequence("fr", "translate", True) == (t.sot, t.n_text + 8, t.translate)
    with pytest.raises(ValueError, match="'summarize'"):
        t.sot_sequence("de", "summarize")
    with pytest.raises(ValueError, match="'summarize'"):
        t.sot_sequence(None, "summarize")
    with pytest.raises(ValueError, match="'klingon'"):
        t.sot_sequence("klingon")


SEEN = [
    " Le cœur a ses raisons que la raison ne connaît point.",
    " Die Straße ist naß, größer und schöner als gestern.",
    " Tiếng Việt có dấu",
    " Москва — столица России.",
    " 今天天气很好。",
    " 日本語の文章にはひらがなとカタカナ",
    " مرحبا بالعالم",
    " नमस्ते दुनिया",
    " Γειά σου κόσμε",
    " In 1969, 3.14159 and 42% (approx.)!?",
    "no leading space",
    "  two  spaces  and   three   ",
    "",
    " ",
]
UNSEEN = [
    " 😀👍🏽 emoji",
    " 𠀀𪚥 rare ideographs",
    " ภาษาไทย Thai",
    " ქართული Georgian",
    "tab\tnewline\nreturn\r nul\x00 end",
    "a literal ▁ lower block and ▁▁ two",
    "ﬁ ligature, ① circled, Ａ fullwidth (NFKC would rewrite them)",
]


@pytest.mark.parametrize("text", SEEN + UNSEEN)
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.n_text for i in ids)
    assert tokenizer.decode(ids) == text


def test_unseen_characters_become_byte_pieces(tokenizer):
    sp = spm.SentencePieceProcessor(model_proto=tokenizer.text.model)
    ids = tokenizer.encode("😀")
    assert [sp.id_to_piece(i) for i in ids] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    assert not any(sp.is_unknown(i) for i in tokenizer.encode("".join(UNSEEN)))


def test_encoding_is_concatenative(tokenizer):
    # As with Whisper's BPE: segments can be encoded apart and decoded together.
    texts = SEEN + UNSEEN
    ids = [i for text in texts for i in tokenizer.encode(text)]
    assert tokenizer.decode(ids) == "".join(texts)
    # Seen text is encoded with pieces longer than one character (few, from so tiny a corpus).
    assert len(tokenizer.encode(" The quick brown fox")) < len(" The quick brown fox")


def test_text_never_becomes_special_tokens(tokenizer):
    text = "<|endoftext|><|en|><|0.00|><|startoftranscript|><0x41><unk>"
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.n_text for i in ids)
    assert tokenizer.decode(ids) == text


def test_decode_skips_specials(tokenizer):
    t = tokenizer
    ts = t.specials.timestamp_token
    hello = t.encode(" hello")
    ids = [*t.sot_sequence("en", timestamps=True), ts(0.0), *hello, ts(1.08), t.no_speech, t.eot]
    assert t.decode(ids) == " hello"
    assert t.decode([-100, *hello, -100]) == " hello"  # the loss's padding is skipped too
    assert t.decode_with_timestamps(ids) == "<|0.00|> hello<|1.08|>"
    assert t.decode_with_timestamps(torch.tensor(ids)) == "<|0.00|> hello<|1.08|>"
    two_segments = [ts(0.0), *hello, ts(1.0), ts(1.0), *t.encode(" world"), ts(2.5)]
    assert t.decode_with_timestamps(two_segments) == "<|0.00|> hello<|1.00|><|1.00|> world<|2.50|>"
    assert t.decode(two_segments) == " hello world"


def test_timestamp_tokens(tokenizer):
    s = tokenizer.specials
    begin, last = s.timestamp_begin, s.n_vocab - 1
    for k in range(N_TIMESTAMPS):
        token = s.timestamp_token(k * 0.02)
        assert token == begin + k
        assert s.timestamp_seconds(token) == round(k * 0.02, 2)
        assert s.name(token) == f"<|{k * 0.02:.2f}|>"
    assert s.timestamp_token(1.009) == begin + 50
    assert s.timestamp_token(1.011) == begin + 51
    assert s.timestamp_token(1.08) == begin + 54
    assert s.timestamp_token(29.999) == last
    assert s.timestamp_token(31.0) == last  # clamped
    assert s.timestamp_token(-0.5) == begin  # clamped
    assert s.timestamp_seconds(begin + 54) == 1.08
    assert [s.is_timestamp(i) for i in (begin - 1, begin, last, last + 1)] == [False, True, True, False]
    with pytest.raises(ValueError, match="not a timestamp"):
        s.timestamp_seconds(s.no_timestamps)


def test_state_round_trip_through_torch_checkpoint(tokenizer):
    buffer = io.BytesIO()
    torch.save({"tokenizer": tokenizer.state()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["tokenizer"]
    assert state["type"] == "sentencepiece"
    loaded = Tokenizer.from_state(state)
    assert loaded.n_vocab == tokenizer.n_vocab
    assert loaded.specials == tokenizer.specials
    for text in SEEN + UNSEEN:
        assert loaded.encode(text) == tokenizer.encode(text)


def test_state_keeps_the_language_list(model):
    tokenizer = Tokenizer.from_sentencepiece(model, languages=tuple(LANGUAGES)[:99])
    loaded = Tokenizer.from_state(tokenizer.state())
    assert loaded.specials.languages == tuple(LANGUAGES)[:99]
    assert loaded.timestamp_begin == tokenizer.n_text + 107
    with pytest.raises(ValueError, match="'tiktoken'"):
        Tokenizer.from_state({**tokenizer.state(), "type": "tiktoken"})


def test_training_is_deterministic(model):
    assert train_sentencepiece(CORPUS, vocab_size=VOCAB_SIZE, num_threads=1) == model
    # Sampling a subset is ours, seeded (SentencePiece's own sampling is not reproducible).
    many = [f"{s} {i}" for i, s in enumerate(CORPUS * 3)]
    first = train_sentencepiece(many, vocab_size=VOCAB_SIZE, max_sentences=100, num_threads=1)
    assert train_sentencepiece(many, vocab_size=VOCAB_SIZE, max_sentences=100, num_threads=1) == first
    other_seed = train_sentencepiece(many, vocab_size=VOCAB_SIZE, max_sentences=100, seed=1, num_threads=1)
    assert other_seed != first


def test_doubled_letters_get_pieces_of_their_own():
    texts = [" La ragazza e il gatto nella villa.", " Il gatto, la bella ragazza.", " 1100 volte: ... !!"] * 10
    # digits, punctuation and spaces are never doubled-letter pieces; "ll" 30 times, "zz" 20, "tt" 20, "gg" 0
    assert doubled_letter_pieces(texts, 20) == ["ll", "tt", "zz"]
    assert doubled_letter_pieces(texts, 21) == ["ll"]
    doubled = train_sentencepiece(texts, 300, doubled_letters=20, num_threads=1)
    plain = train_sentencepiece(texts, 300, num_threads=1)
    pieces = spm.SentencePieceProcessor(model_proto=doubled).encode(" ragazza gatto", out_type=str)
    assert "zz" in pieces and "tt" in pieces
    assert not {"zz", "tt"} & set(spm.SentencePieceProcessor(model_proto=plain).encode(" ragazza gatto", out_type=str))
    # on top of vocab_size: as many pieces learnt as without them
    many = CORPUS + texts
    sizes = [spm.SentencePieceProcessor(model_proto=train_sentencepiece(many, 520, doubled_letters=n, num_threads=1))
             .get_piece_size() for n in (0, 20)]
    assert sizes == [520, 520 + len(doubled_letter_pieces(many, 20))] and sizes[1] > 520
    codec = SentencePieceCodec(doubled)
    assert codec.decode(codec.encode(" La ragazza, il gatto.")) == " La ragazza, il gatto."


def test_max_piece_length_bounds_the_pieces_learnt():
    def longest(model: bytes) -> int:
        sp = spm.SentencePieceProcessor(model_proto=model)
        return max(len(sp.id_to_piece(i)) for i in range(sp.get_piece_size())
                   if not (sp.is_byte(i) or sp.is_unknown(i)))

    texts = [" The grandmother kisses the grandfather.", " Every morning the grandmother waits."] * 20
    assert longest(train_sentencepiece(texts, 300, num_threads=1)) > 5  # "▁grandmother" and the like
    short = train_sentencepiece(texts, 300, max_piece_length=3, num_threads=1)
    assert longest(short) == 3
    codec = SentencePieceCodec(short)
    assert codec.decode(codec.encode(" The grandmother waits.")) == " The grandmother waits."
    with pytest.raises(ValueError, match="max_piece_length must be at least 1"):
        load_config(None, ["tokenizer.max_piece_length=0"])


def test_bpe_and_tiny_corpus():
    # A vocab_size the corpus cannot fill gives a smaller vocabulary, not an error.
    model = train_sentencepiece([" tiny corpus"] * 3, vocab_size=1000, model_type="bpe")
    tokenizer = Tokenizer.from_sentencepiece(model)
    assert 257 < tokenizer.n_text < 1000
    for text in SEEN + UNSEEN:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    with pytest.raises(ValueError, match="no texts"):
        train_sentencepiece(["", ""], 1000)
    with pytest.raises(ValueError, match="'wordpiece'"):
        train_sentencepiece(CORPUS, 1000, model_type="wordpiece")


def _plain_sentencepiece(**options) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False,
        minloglevel=2,
        **options,
    )
    return model.getvalue()


def test_rejects_models_that_do_not_round_trip():
    with pytest.raises(ValueError, match="byte_fallback"):
        SentencePieceCodec(_plain_sentencepiece())
    # SentencePiece's defaults: NFKC, dummy prefix, extra whitespace removed.
    with pytest.raises(ValueError, match="round-trip"):
        SentencePieceCodec(_plain_sentencepiece(byte_fallback=True))


def test_characters_written_often_enough_are_pieces_whatever_the_coverage():
    texts = [" the cat sat on the mat."] * 100 + [" Жук."] * 10  # Ж, у, к: 10 times each, 0.4% of the text
    # SentencePiece keeps characters, most frequent first (ties in code point order), while those kept so
    # far cover less than 99% of the text: Ж brings them to 98.8%, the last kept.
    assert uncovered_characters(texts, 0.99, 10) == ["к", "у"]
    assert uncovered_characters(texts, 0.99, 11) == [] and uncovered_characters(texts, 0.999, 10) == []

    def byte_pieces(model: bytes) -> int:
        sp = spm.SentencePieceProcessor(model_proto=model)
        return sum(sp.is_byte(i) for i in sp.encode(" Жук.", out_type=int))

    assert byte_pieces(train_sentencepiece(texts, 300, character_coverage=0.99, num_threads=1)) == 4  # 2 bytes each
    required = train_sentencepiece(texts, 300, character_coverage=0.99, min_char_count=10, num_threads=1)
    assert byte_pieces(required) == 0
    codec = SentencePieceCodec(required)
    assert codec.decode(codec.encode(" Жук, the cat.")) == " Жук, the cat."
    with pytest.raises(ValueError, match="min_char_count must be >= 0"):
        load_config(None, ["tokenizer.min_char_count=-1"])


def test_token_bytes_spell_the_text_byte_for_byte(tokenizer):
    table = tokenizer.token_bytes()
    assert len(table) == tokenizer.n_text
    for text in (" the cat sat.", " Лошадь ♪", "a\u2581b", "  "):
        assert b"".join(table[t] for t in tokenizer.encode(text)) == text.encode()
