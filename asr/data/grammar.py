"""A small parallel grammar: one abstract sentence, realised in six languages.

A sentence is [time adverb] + subject + verb + object + [place], all present tense and singular:

    >>> s = Sentence(time=0, subject=0, verb=0, obj=1, place=0)
    >>> realise(s, "en")
    'Today the cat sees the dog in the garden.'
    >>> realise(s, "de")
    'Heute sieht die Katze den Hund im Garten.'
    >>> realise(s, "ru")
    'Сегодня кошка видит собаку в саду.'

The lexicon holds each word in the forms the sentence needs (German and Russian accusatives; Spanish
adds the personal "a" to its objects, all of which are people or animals; a verb carries the
preposition its object needs, "wartet auf", "смотрит на"), so realising a sentence is only word
order: German puts the verb second after a fronted adverb, French sets the adverb off with a comma.
Every abstract sentence has one split (split_of), so a sentence and its translations never cross
from train into dev or test.
"""

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

LANGUAGES = ("en", "de", "fr", "es", "it", "ru")

# One row per time adverb: en, de, fr, es, it, ru.
TIMES = (
    ("Today", "Heute", "Aujourd'hui", "Hoy", "Oggi", "Сегодня"),
    ("Now", "Jetzt", "Maintenant", "Ahora", "Adesso", "Сейчас"),
    ("Often", "Oft", "Souvent", "A menudo", "Spesso", "Часто"),
    ("Sometimes", "Manchmal", "Parfois", "A veces", "A volte", "Иногда"),
    ("Every morning", "Jeden Morgen", "Chaque matin", "Cada mañana", "Ogni mattina", "Каждое утро"),
    ("Every evening", "Jeden Abend", "Chaque soir", "Cada tarde", "Ogni sera", "Каждый вечер"),
)

# One row per noun (people and animals, so that every verb fits every object):
# en, de nominative, de accusative, fr, es, it, ru nominative, ru accusative.
NOUNS = (
    ("the cat", "die Katze", "die Katze", "le chat", "el gato", "il gatto", "кошка", "кошку"),
    ("the dog", "der Hund", "den Hund", "le chien", "el perro", "il cane", "собака", "собаку"),
    ("the bird", "der Vogel", "den Vogel", "l'oiseau", "el pájaro", "l'uccello", "птица", "птицу"),
    ("the horse", "das Pferd", "das Pferd", "le cheval", "el caballo", "il cavallo", "лошадь", "лошадь"),
    ("the rabbit", "das Kaninchen", "das Kaninchen", "le lapin", "el conejo", "il coniglio", "кролик", "кролика"),
    ("the boy", "der Junge", "den Jungen", "le garçon", "el chico", "il ragazzo", "мальчик", "мальчика"),
    ("the girl", "das Mädchen", "das Mädchen", "la fille", "la chica", "la ragazza", "девочка", "девочку"),
    ("the child", "das Kind", "das Kind", "l'enfant", "el niño", "il bambino", "ребёнок", "ребёнка"),
    ("the teacher", "der Lehrer", "den Lehrer", "le professeur", "el profesor", "il professore", "учитель", "учителя"),
    ("the doctor", "der Arzt", "den Arzt", "le médecin", "el médico", "il medico", "врач", "врача"),
    ("the mother", "die Mutter", "die Mutter", "la mère", "la madre", "la madre", "мать", "мать"),
    ("the father", "der Vater", "den Vater", "le père", "el padre", "il padre", "отец", "отца"),
    ("the grandmother", "die Großmutter", "die Großmutter", "la grand-mère", "la abuela", "la nonna", "бабушка", "бабушку"),
    ("the grandfather", "der Großvater", "den Großvater", "le grand-père", "el abuelo", "il nonno", "дедушка", "дедушку"),
    ("the neighbour", "der Nachbar", "den Nachbarn", "le voisin", "el vecino", "il vicino", "сосед", "соседа"),
    ("the farmer", "der Bauer", "den Bauern", "le fermier", "el granjero", "il contadino", "фермер", "фермера"),
    ("the cook", "der Koch", "den Koch", "le cuisinier", "el cocinero", "il cuoco", "повар", "повара"),
    ("the king", "der König", "den König", "le roi", "el rey", "il re", "король", "короля"),
    ("the queen", "die Königin", "die Königin", "la reine", "la reina", "la regina", "королева", "королеву"),
    ("the nurse", "die Krankenschwester", "die Krankenschwester", "l'infirmière", "la enfermera", "l'infermiera", "медсестра", "медсестру"),
)  # fmt: skip

# One row per transitive verb, third person singular, each taking the accusative object as it is;
# a verb's first word is the finite verb, the rest a preposition before the object ("wartet auf",
# "смотрит на"): en, de, fr, es, it, ru.
VERBS = (
    ("sees", "sieht", "voit", "ve", "vede", "видит"),
    ("finds", "findet", "trouve", "encuentra", "trova", "находит"),
    ("looks for", "sucht", "cherche", "busca", "cerca", "ищет"),
    ("looks at", "betrachtet", "regarde", "mira", "guarda", "смотрит на"),
    ("kisses", "küsst", "embrasse", "besa", "bacia", "целует"),
    ("waits for", "wartet auf", "attend", "espera", "aspetta", "ждёт"),
    ("hears", "hört", "entend", "oye", "sente", "слышит"),
    ("washes", "wäscht", "lave", "lava", "lava", "моет"),
    ("calls", "ruft", "appelle", "llama", "chiama", "зовёт"),
    ("wakes", "weckt", "réveille", "despierta", "sveglia", "будит"),
    ("draws", "zeichnet", "dessine", "dibuja", "disegna", "рисует"),
    ("photographs", "fotografiert", "photographie", "fotografía", "fotografa", "фотографирует"),
    ("greets", "begrüßt", "salue", "saluda", "saluta", "приветствует"),
    ("chases", "jagt", "poursuit", "persigue", "insegue", "преследует"),
    ("protects", "beschützt", "protège", "protege", "protegge", "защищает"),
)

# One row per place: en, de, fr, es, it, ru.
PLACES = (
    ("in the garden", "im Garten", "dans le jardin", "en el jardín", "in giardino", "в саду"),
    ("in the kitchen", "in der Küche", "dans la cuisine", "en la cocina", "in cucina", "на кухне"),
    ("in the park", "im Park", "dans le parc", "en el parque", "nel parco", "в парке"),
    ("at school", "in der Schule", "à l'école", "en la escuela", "a scuola", "в школе"),
    ("at the market", "auf dem Markt", "au marché", "en el mercado", "al mercato", "на рынке"),
    ("in the forest", "im Wald", "dans la forêt", "en el bosque", "nel bosco", "в лесу"),
    ("at the station", "am Bahnhof", "à la gare", "en la estación", "alla stazione", "на вокзале"),
    ("on the beach", "am Strand", "sur la plage", "en la playa", "sulla spiaggia", "на пляже"),
    ("in the village", "im Dorf", "dans le village", "en el pueblo", "nel villaggio", "в деревне"),
    ("at home", "zu Hause", "à la maison", "en casa", "a casa", "дома"),
)

SPLIT_SHARES = {"train": 0.90, "dev": 0.05, "test": 0.05}  # of all abstract sentences


@dataclass(frozen=True)
class Sentence:
    """An abstract sentence: indices into TIMES, NOUNS (subject, obj), VERBS and PLACES; None leaves it out."""

    time: int | None
    subject: int
    verb: int
    obj: int
    place: int | None


def _noun(index: int, language: str, accusative: bool) -> str:
    """NOUNS[index] in `language`, as the subject (nominative) or as the object (accusative)."""
    en, de_nom, de_acc, fr, es, it, ru_nom, ru_acc = NOUNS[index]
    if not accusative:
        return {"en": en, "de": de_nom, "fr": fr, "es": es, "it": it, "ru": ru_nom}[language]
    es_acc = "al " + es[3:] if es.startswith("el ") else "a " + es  # the personal "a"; a + el -> al
    return {"en": en, "de": de_acc, "fr": fr, "es": es_acc, "it": it, "ru": ru_acc}[language]


def realise(sentence: Sentence, language: str) -> str:
    """The sentence in `language`, capitalised and ending in a full stop."""
    column = LANGUAGES.index(language)
    subject, obj = _noun(sentence.subject, language, False), _noun(sentence.obj, language, True)
    verb, _, preposition = VERBS[sentence.verb][column].partition(" ")  # "wartet auf" -> "wartet", "auf"
    obj = f"{preposition} {obj}" if preposition else obj
    words = [subject, verb, obj]
    if sentence.time is not None:
        time = TIMES[sentence.time][column]
        if language == "de":  # the verb second, after the adverb
            words = [time, verb, subject, obj]
        elif language == "fr":
            words = [time + ",", *words]
        else:
            words = [time, *words]
    if sentence.place is not None:
        words.append(PLACES[sentence.place][column])
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def split_of(sentence: Sentence) -> str:
    """The split an abstract sentence belongs to, fixed by a hash of its indices (the same for every seed)."""
    indices = (sentence.time, sentence.subject, sentence.verb, sentence.obj, sentence.place)
    digest = hashlib.sha256(repr(indices).encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    for split, share in SPLIT_SHARES.items():
        if position < share:
            return split
        position -= share
    return split


def sample_sentence(rng: np.random.Generator, split: str) -> Sentence:
    """A random abstract sentence of `split`: adverb and place each present two times in three."""
    while True:
        subject, obj = rng.choice(len(NOUNS), size=2, replace=False)
        sentence = Sentence(
            time=int(rng.integers(len(TIMES))) if rng.random() < 2 / 3 else None,
            subject=int(subject),
            verb=int(rng.integers(len(VERBS))),
            obj=int(obj),
            place=int(rng.integers(len(PLACES))) if rng.random() < 2 / 3 else None,
        )
        if split_of(sentence) == split:
            return sentence


@functools.cache
def vocabulary(language: str) -> tuple[str, ...]:
    """The distinct words of `language`'s lexicon, lower case, sorted (for inserting and substituting words)."""
    column = LANGUAGES.index(language)
    phrases = [row[column] for row in TIMES + VERBS + PLACES]
    phrases += [_noun(i, language, accusative) for i in range(len(NOUNS)) for accusative in (False, True)]
    return tuple(sorted({word.lower() for phrase in phrases for word in phrase.split()}))


def n_sentences() -> int:
    """How many distinct abstract sentences the grammar has."""
    return (len(TIMES) + 1) * len(NOUNS) * (len(NOUNS) - 1) * len(VERBS) * (len(PLACES) + 1)
