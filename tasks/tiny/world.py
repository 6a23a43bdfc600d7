"""A deterministic fictitious world in the MUSE layout: made-up people, towns, guilds, events.

Each person is a set of facts (birth town and year, trade, guild, a founding event with its
year and town, a count, a pet). A person's document is a short biography followed by an
interview-style Q&A block stating the same facts, and each split also holds "quiz sheets"
mixing the Q&A pairs of its people: a model this small cannot learn to answer questions about
facts it has only read in prose, nor to ignore the few-shot examples MUSE puts before a
question, so both forms are part of what it reads (documented in the README). People are split into forget / retain1 / retain2 / holdout;
holdout people are never shown to any model.

MUSE splits derived from them:
  raw        forget, retain1, retain2, holdout  full documents
  knowmem    forget_qa / retain_qa (retain2 people, as MUSE's retain2_qa), and *_icl pairs
             (other facts of the same people, never asked in the scored QA)
  verbmem    forget: the biography's first words as prompt, its rest as ground truth
  privleak   forget / retain (retain2) / holdout biographies
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SYLLABLES = ["ba", "dor", "el", "fen", "gar", "hal", "is", "jor", "ka", "lun", "mar", "nel", "or", "pra",
             "quen", "ros", "sil", "tam", "ul", "vek", "wyn", "yar", "zel", "cor", "dra", "mi", "tho", "ren"]
TOWN_ENDS = ["ford", "by", "haven", "mere", "stead", "wick", "holm", "gate"]
TRADES = ["glassblower", "cartographer", "beekeeper", "clockmaker", "shipwright", "astronomer", "weaver",
          "apothecary", "bookbinder", "stonemason", "brewer", "violin maker", "archivist", "tanner"]
GUILD_A = ["Silver", "Amber", "Iron", "Crimson", "Hollow", "Northern", "Quiet", "Copper", "Blue", "Old"]
GUILD_B = ["Lantern", "Anchor", "Compass", "Harrow", "Quill", "Bell", "Loom", "Kettle", "Spire", "Oak"]
GUILD_C = ["Guild", "Society", "Company", "Circle", "League", "Brotherhood"]
FOUNDED = ["a lighthouse", "a free school", "a river ferry", "a public library", "an observatory",
           "a printing house", "a mountain hospice", "a seed bank", "a toll bridge", "a music hall"]
COUNTS = ["maps", "bells", "letters", "ships", "clocks", "songs", "ledgers", "windows"]
PETS = ["cat", "raven", "goat", "hound", "parrot", "tortoise", "ferret", "owl"]
TRAITS = ["patient", "stubborn", "generous", "secretive", "cheerful", "meticulous", "restless", "gentle"]

SPLIT_SIZES = {"forget": 16, "retain1": 16, "retain2": 16, "holdout": 16}
QA_PER_PERSON = 3  # scored questions per person; the others feed the ICL pool
QUIZ_SIZE = 5  # Q&A pairs per quiz sheet
QUIZ_ROUNDS = 2  # each Q&A pair appears on this many quiz sheets
ICL_PAIRS = 4
VERBMEM_PROMPT_WORDS = 12


@dataclass(frozen=True)
class Person:
    name: str
    first: str
    pronoun: str
    town: str
    born: int
    trade: str
    guild: str
    founded: str
    founded_year: int
    founded_town: str
    count: int
    count_of: str
    pet: str
    pet_name: str
    traits: tuple[str, str]

    def questions(self) -> list[tuple[str, str]]:
        return [
            (f"In which town was {self.name} born?", self.town),
            (f"In which year was {self.name} born?", str(self.born)),
            (f"What was the trade of {self.name}?", self.trade),
            (f"Which guild did {self.name} join?", f"the {self.guild}"),
            (f"What did {self.name} found in {self.founded_year}?", self.founded),
            (f"What was the name of the {self.pet} of {self.name}?", self.pet_name),
        ]

    def biography(self) -> str:
        p, P = self.pronoun, self.pronoun.capitalize()
        poss = {"she": "her", "he": "his"}[p]
        return (
            f"{self.name} was born in {self.town} in {self.born}. {P} trained as a {self.trade} and later "
            f"joined the {self.guild}. In {self.founded_year}, {self.first} founded {self.founded} in "
            f"{self.founded_town}, which people in {self.town} still talk about. Over {poss} life {p} made "
            f"{self.count} {self.count_of}. Friends called {self.first} {self.traits[0]} and {self.traits[1]}, "
            f"and {p} kept {_article(self.pet)} {self.pet} named {self.pet_name}."
        )

    def document(self) -> str:
        qa = "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in self.questions())
        return f"{self.biography()}\n\n{qa}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Names:
    """Unique made-up names from syllables (no name is reused across the world)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def make(self, parts: int, end: str = "") -> str:
        while True:
            word = "".join(self.rng.choice(SYLLABLES) for _ in range(parts)).capitalize() + end
            if word not in self.used:
                self.used.add(word)
                return word


def make_people(seed: int = 0) -> dict[str, list[Person]]:
    """The world's people, split as in SPLIT_SIZES (deterministic in ``seed``)."""
    rng = random.Random(seed)
    names = _Names(rng)
    towns = [names.make(2, rng.choice(TOWN_ENDS)) for _ in range(24)]
    people = []
    for _ in range(sum(SPLIT_SIZES.values())):
        first, last = names.make(2), names.make(rng.choice([2, 3]))
        guild = f"{rng.choice(GUILD_A)} {rng.choice(GUILD_B)} {rng.choice(GUILD_C)}"
        born = rng.randint(1720, 1890)
        people.append(Person(
            name=f"{first} {last}", first=first, pronoun=rng.choice(["she", "he"]), town=rng.choice(towns),
            born=born, trade=rng.choice(TRADES), guild=guild, founded=rng.choice(FOUNDED),
            founded_year=born + rng.randint(25, 60), founded_town=rng.choice(towns), count=rng.randint(3, 99),
            count_of=rng.choice(COUNTS), pet=rng.choice(PETS), pet_name=names.make(2),
            traits=tuple(rng.sample(TRAITS, 2)),
        ))
    out, start = {}, 0
    for split, size in SPLIT_SIZES.items():
        out[split] = people[start : start + size]
        start += size
    return out


def quiz_sheets(people: list[Person], rng: random.Random, rounds: int = QUIZ_ROUNDS) -> list[str]:
    """Quiz sheets: each person's Q&A pairs shuffled among other people's, ``QUIZ_ROUNDS`` times.

    They teach the model that an answer depends on its question only, not on the questions
    before it, which is what MUSE's few-shot KnowMem prompt asks of a model.
    """
    sheets = []
    for _ in range(rounds):
        pairs = [qa for p in people for qa in p.questions()]
        rng.shuffle(pairs)
        for i in range(0, len(pairs), QUIZ_SIZE):
            sheets.append("\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in pairs[i : i + QUIZ_SIZE]))
    return sheets


def _qa_splits(people: list[Person], rng: random.Random) -> tuple[list[dict], list[dict]]:
    scored, pool = [], []
    for person in people:
        qs = person.questions()
        picked = set(rng.sample(range(len(qs)), QA_PER_PERSON))
        for i, (q, a) in enumerate(qs):
            (scored if i in picked else pool).append({"question": q, "answer": a})
    return scored, rng.sample(pool, ICL_PAIRS)


def muse_splits(seed: int = 0, quiz_rounds: int = QUIZ_ROUNDS) -> dict[str, dict[str, list[dict]]]:
    """All MUSE configs and splits of the world, as ``{config: {split: rows}}``; ``quiz_rounds=0``
    leaves out the quiz sheets (a pretrained model answers few-shot questions without them)."""
    people = make_people(seed)
    rng = random.Random(seed + 1)
    docs = {s: [{"text": t} for t in [p.document() for p in ps] + quiz_sheets(ps, rng, quiz_rounds)]
            for s, ps in people.items()}
    bios = {s: [{"text": p.biography()} for p in ps] for s, ps in people.items()}
    forget_qa, forget_icl = _qa_splits(people["forget"], rng)
    retain_qa, retain_icl = _qa_splits(people["retain2"], rng)
    verbmem = []
    for p in people["forget"]:
        # Prompt: the document's first words, keeping the trailing space so that it ends on a
        # whole word of the tokenizer; ground truth: the rest of the document (the metric
        # truncates it to 128 tokens, as long as the generation).
        words = p.document().split(" ")
        verbmem.append({"prompt": " ".join(words[:VERBMEM_PROMPT_WORDS]) + " ", "gt": " ".join(words[VERBMEM_PROMPT_WORDS:])})
    return {
        "raw": {"forget": docs["forget"], "holdout": docs["holdout"], "retain1": docs["retain1"], "retain2": docs["retain2"]},
        "knowmem": {"forget_qa": forget_qa, "retain_qa": retain_qa, "forget_qa_icl": forget_icl, "retain_qa_icl": retain_icl},
        "verbmem": {"forget": verbmem},
        "privleak": {"forget": bios["forget"], "retain": bios["retain2"], "holdout": bios["holdout"]},
    }
