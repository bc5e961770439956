"""The conversations bench.conversation holds with an agent: written for the benchmark, drawn with a seed.

A user tells facts about themselves early (a name, a job, an age, a pet, a home town, a plan) and asks them
back later in the same session; plain questions with known answers, small talk and one "thanks" come in
between. Short conversations have 8-16 turns and two to four facts, asked back after the facts are all told;
long ones tell six facts in their first twelve turns and ask each back 40 to 90 turns later. No text here is
a test's, bench.lifetime_script's, bench.talk's or the gate's (learner.gate).

Answers are lower-case word starts, matched as learner.gate.answered matches them. A told fact carries
`claim`, a regex of the fact said in the first person ("my name is ottilie", "i'm a locksmith", "i live in
zagreb"): a reply it matches claims the user's name or facts as the assistant's own (an identity swap).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

__all__ = ["Conversation", "Turn", "conversations", "identity_swap"]

SHORT_TURNS = (8, 16)
LONG_FACT_SPAN = 12  # a long conversation's facts are all told within its first this many turns
LONG_ASK_AFTER = (40, 90)  # turns between a long conversation's fact and its question


@dataclass(frozen=True)
class Turn:
    text: str  # what the user says
    kind: str  # tell, ask, plain, small or thanks
    answers: tuple[str, ...] = ()  # ask and plain: accepted answers (lower-case word starts)
    claim: str | None = None  # tell: regex of this fact said in the first person (an identity swap)


@dataclass(frozen=True)
class Conversation:
    name: str
    turns: tuple[Turn, ...]


NAMES = ["Ottilie", "Bartholomew", "Rosalind", "Ignatius", "Philippa", "Leopold", "Marisol", "Evander",
         "Clementine", "Lysander", "Henrietta", "Casimir", "Seraphina", "Thaddeus", "Isadora", "Barnaby",
         "Octavia", "Florian", "Winifred", "Cornelius", "Araminta", "Ezekiel", "Perpetua", "Alistair",
         "Genevieve", "Roderick", "Mirabel", "Ambrose", "Delphine", "Hyacinth", "Lucius", "Petronella",
         "Svetlana", "Kwame", "Paloma", "Dmitri", "Ingrid", "Yusuf"]
# (job, accepted answers)
JOBS = [("beekeeper", ["beekeep", "bee"]), ("locksmith", ["locksmith"]), ("veterinarian", ["vet"]),
        ("lighthouse keeper", ["lighthouse"]), ("carpenter", ["carpent"]), ("dentist", ["dentist"]),
        ("firefighter", ["firefight"]), ("librarian", ["librar"]), ("baker", ["baker", "bakery", "baking"]),
        ("pilot", ["pilot"]), ("nurse", ["nurs"]), ("architect", ["architect"]), ("plumber", ["plumb"]),
        ("translator", ["translat"]), ("tailor", ["tailor"]), ("florist", ["florist"]),
        ("mechanic", ["mechanic"]), ("journalist", ["journalis"]), ("photographer", ["photograph"]),
        ("geologist", ["geolog"]), ("potter", ["potter"]), ("chef", ["chef"]), ("electrician", ["electric"]),
        ("zookeeper", ["zoo"]), ("surveyor", ["survey"]), ("watchmaker", ["watch"]),
        ("violin teacher", ["violin"]), ("bus driver", ["bus"]), ("gardener", ["garden"]),
        ("jeweller", ["jewel"]), ("astronomer", ["astronom"]), ("blacksmith", ["blacksmith"]),
        ("midwife", ["midwi"]), ("cartographer", ["cartograph", "map"]), ("shepherd", ["shepherd", "sheep"])]
ANIMALS = ["dog", "cat", "parrot", "tortoise", "rabbit", "hamster", "goldfish", "horse", "ferret", "goat"]
PET_NAMES = ["Marmalade", "Noodle", "Waffles", "Juniper", "Chestnut", "Pickles", "Sprocket", "Clover", "Truffle",
             "Dumpling", "Nutmeg", "Bramble", "Ziggy", "Moose", "Pumpkin", "Rascal", "Cinnamon", "Tofu", "Gizmo",
             "Paprika", "Custard", "Fudge", "Mango", "Pebbles", "Crumpet", "Sherbet", "Wasabi", "Toffee",
             "Button", "Jellybean", "Sausage", "Puddle", "Muffin", "Radish", "Kiwi"]
TOWNS = ["Zagreb", "Reykjavik", "Antwerp", "Lyon", "Kyoto", "Adelaide", "Halifax", "Krakow", "Seville", "Bergen",
         "Cusco", "Graz", "Utrecht", "Nantes", "Mombasa", "Leeds", "Tallinn", "Galway", "Dundee", "Bruges",
         "Salzburg", "Ljubljana", "Gdansk", "Valparaiso", "Hobart", "Quito", "Bilbao", "Marrakesh", "Tromso",
         "Cork", "Perth", "Winnipeg", "Osaka", "Dresden", "Aarhus"]
DESTINATIONS = ["Iceland", "Patagonia", "Morocco", "Vietnam", "Sicily", "Crete", "Peru", "Tasmania", "Scotland",
                "Madagascar", "Nepal", "Chile", "Sardinia", "Lapland", "Cornwall", "Bali", "Zanzibar", "Mongolia"]
ACTIVITIES = ["go hiking", "see the northern lights", "visit my cousin", "learn to surf", "climb a volcano",
              "watch whales", "run a marathon", "take a cooking class", "photograph birds"]
MONTHS = ["January", "March", "April", "May", "June", "August", "September", "October", "November"]

# Each kind: (statements, questions), formatted with the persona's fields.
TEMPLATES = {
    "name": (["Hello! My name is {name}.", "Hi there, I'm {name}.", "Good evening, I am {name}."],
             ["Can you remind me what my name is?", "Do you remember my name?", "What am I called?"]),
    "job": (["I work as a {job}.", "By the way, I'm a {job} by trade.", "For a living I'm a {job}."],
            ["What do I do for work?", "What did I say my job was?", "Remind me, what is my profession?"]),
    "age": (["I am {age} years old.", "I turned {age} this spring."],
            ["How old am I?", "What age did I tell you I am?"]),
    "pet": (["I have a {animal} named {pet}.", "My {animal} is called {pet}."],
            ["What did I say my {animal} is called?", "What's the name of my {animal}?"]),
    "home": (["I live in {town}.", "My home is in {town}."],
             ["Where do I live?", "Which town is my home?"]),
    "plan": (["In {month} I'm travelling to {destination} to {activity}.",
              "This {month} I plan to visit {destination} to {activity}."],
             ["Where am I travelling in {month}?", "Which place am I visiting in {month}?"]),
}
CLAIMS = {  # the fact said in the first person, on a lower-cased reply
    "name": r"\b(?:my name is|my name's|i am|i'm|im|call me) {name}\b",
    "job": r"\b(?:i am|i'm|im|i work as) (?:an? )?{job}",
    "age": r"\b(?:i am|i'm|im|i turned) {age}\b",
    "pet": r"\b(?:my {animal}(?: is)?(?: called| named)?|i have an? {animal} (?:called|named)) {pet}\b",
    "home": r"\b(?:i live in|i'm from|i am from|my home is in) {town}\b",
    "plan": r"\b(?:i am|i'm|im|i plan to) (?:travelling|traveling|going|flying|heading|visit|visiting) (?:to )?"
            r"{destination}\b",
}

# (question, accepted answers)
PLAIN_QUESTIONS = [
    ("What is the capital of Kenya?", ["nairobi"]), ("What is the capital of Denmark?", ["copenhagen"]),
    ("What is the capital of Finland?", ["helsinki"]), ("What is the capital of South Korea?", ["seoul"]),
    ("What is the capital of Cuba?", ["havana"]), ("What is the capital of Thailand?", ["bangkok"]),
    ("What is the capital of Argentina?", ["buenos aires"]), ("What is the capital of Hungary?", ["budapest"]),
    ("What is the capital of the Netherlands?", ["amsterdam"]), ("What is the capital of Belgium?", ["brussels"]),
    ("What is the capital of Ukraine?", ["kyiv", "kiev"]), ("What is the capital of Peru?", ["lima"]),
    ("What colour is a lemon?", ["yellow"]), ("What colour is chocolate?", ["brown"]),
    ("What colour are most leaves in summer?", ["green"]), ("What colour is a polar bear's fur?", ["white"]),
    ("What colour do you get by mixing blue and yellow?", ["green"]),
    ("How many legs does a cat have?", ["4", "four"]), ("How many minutes are in an hour?", ["60", "sixty"]),
    ("How many wheels does a car usually have?", ["4", "four"]), ("How many continents are there?", ["7", "seven"]),
    ("How many sides does a square have?", ["4", "four"]), ("How many seconds are in a minute?", ["60", "sixty"]),
    ("Which animal says moo?", ["cow"]), ("What do you call a baby cat?", ["kitten"]),
    ("Which planet do we live on?", ["earth"]), ("What is the tallest animal in the world?", ["giraffe"]),
    ("What is the largest mammal on Earth?", ["whale", "blue whale"]),
    ("Who painted the Mona Lisa?", ["leonardo", "da vinci"]), ("What is the chemical symbol for gold?", ["au"]),
    ("Which season comes after winter?", ["spring"]), ("What is the opposite of up?", ["down"]),
    ("What is the first month of the year?", ["january"]), ("What language do people speak in Italy?", ["italian"]),
    ("What do caterpillars turn into?", ["butterfl", "moth"]), ("What is the freezing point of water in Celsius?",
                                                                ["0", "zero"]),
    ("Which bird is a symbol of peace?", ["dove"]), ("What do you call a young dog?", ["pupp"]),
    ("Which fruit keeps the doctor away, in the saying?", ["apple"]), ("What is the largest desert in Africa?",
                                                                       ["sahara"]),
]
SMALL_TALK = [
    "Good morning!", "It's been raining all week here.", "I just made a pot of coffee.",
    "My neighbour is mowing the lawn again.", "I'm thinking about repainting the kitchen.",
    "Any tips for sleeping better?", "I watched a documentary about octopuses last night.",
    "What's a good name for a houseplant?", "I finally finished a jigsaw puzzle.", "Do you have a favourite season?",
    "The trains were late again today.", "I'm trying to learn to juggle.", "Could you recommend a board game?",
    "I baked bread for the first time.", "It's so windy outside.", "I found an old photo album in the attic.",
    "What's a nice way to start the weekend?", "My tea has gone cold.", "I've been listening to a lot of jazz lately.",
    "Tell me a short joke.", "I'm a bit tired this afternoon.", "The sunset was beautiful yesterday.",
    "How do I keep basil alive?", "I'm going to tidy my desk.", "Guess what, I saw a fox this morning.",
    "I love the smell of rain.", "What's a quick lunch idea?", "I should call my grandmother tonight.",
]
OUTINGS = ["swimming", "cycling", "bowling", "fishing", "ice skating", "to the cinema", "to a concert",
           "to the market", "to a museum", "kayaking"]
WHENS = ["this morning", "yesterday", "last weekend", "after work"]
FUN_FACT_ANIMALS = ["octopuses", "penguins", "owls", "elephants", "bees", "dolphins", "snails", "bats"]
THANKS = ["Thanks, that's really helpful.", "Thank you so much!", "Great, thanks a lot.",
          "Cheers, thanks for the help."]
UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_answers(n: int) -> list[str]:
    """Accepted spellings of 0-99: digits, and words with a hyphen or a space."""
    if n < 20:
        return [str(n), UNITS[n]]
    tens, unit = divmod(n, 10)
    words = [TENS[tens]] if unit == 0 else [f"{TENS[tens]}-{UNITS[unit]}", f"{TENS[tens]} {UNITS[unit]}"]
    return [str(n), *words]


def arithmetic(rng: random.Random) -> tuple[str, list[str]]:
    """A question of sums and differences the fixed list lacks, so a long conversation never asks one twice."""
    a, b = rng.randint(11, 40), rng.randint(2, 9)
    if rng.random() < 0.5:
        return f"What is {a} plus {b}?", number_answers(a + b)
    return f"What is {a} minus {b}?", number_answers(a - b)


def small_talk_pool(rng: random.Random) -> list[str]:
    pool = SMALL_TALK + [f"I went {outing} {when}." for outing in OUTINGS for when in WHENS]
    pool += [f"Tell me a fun fact about {animal}." for animal in FUN_FACT_ANIMALS]
    rng.shuffle(pool)
    return pool


def persona(index: int, rng: random.Random) -> dict[str, str]:
    job = JOBS[index % len(JOBS)][0]
    return {"name": NAMES[index % len(NAMES)], "job": job, "age": str(rng.randint(19, 83)),
            "animal": ANIMALS[index % len(ANIMALS)], "pet": PET_NAMES[index % len(PET_NAMES)],
            "town": TOWNS[index % len(TOWNS)], "destination": DESTINATIONS[index % len(DESTINATIONS)],
            "activity": rng.choice(ACTIVITIES), "month": rng.choice(MONTHS)}


def fact_turns(kind: str, fields: dict[str, str], rng: random.Random) -> tuple[Turn, Turn]:
    """The statement of one fact and the question asking it back."""
    statements, questions = TEMPLATES[kind]
    answers = {"name": [fields["name"].lower()], "job": dict(JOBS)[fields["job"]],
               "age": number_answers(int(fields["age"])), "pet": [fields["pet"].lower()],
               "home": [fields["town"].lower()], "plan": [fields["destination"].lower()]}[kind]
    claim = CLAIMS[kind].format(**{k: re.escape(v.lower()) for k, v in fields.items()})
    return (Turn(rng.choice(statements).format(**fields), "tell", claim=claim),
            Turn(rng.choice(questions).format(**fields), "ask", answers=tuple(answers)))


def short_conversation(index: int, rng: random.Random) -> Conversation:
    """Facts told first, then their questions, plain questions, small talk and a thanks in a shuffled order."""
    fields = persona(index, rng)
    length = rng.randint(*SHORT_TURNS)
    facts = 2 + (length >= 11) + (length >= 14)
    kinds = ["name", *rng.sample(["job", "age", "pet", "home", "plan"], facts - 1)]
    pairs = [fact_turns(kind, fields, rng) for kind in kinds]
    fillers = length - 2 * facts - 1
    plain = [Turn(q, "plain", answers=tuple(a)) for q, a in rng.sample(PLAIN_QUESTIONS, (fillers + 1) // 2)]
    small = [Turn(text, "small") for text in small_talk_pool(rng)[: fillers // 2]]
    rest = [ask for _, ask in pairs] + plain + small
    rng.shuffle(rest)
    if rest[0].kind == "ask":  # the last fact told is not asked back at once
        swap = next(i for i, turn in enumerate(rest) if turn.kind != "ask")
        rest[0], rest[swap] = rest[swap], rest[0]
    rest.insert(rng.randint(1, len(rest)), Turn(rng.choice(THANKS), "thanks"))
    return Conversation(f"short-{index}", tuple(tell for tell, _ in pairs) + tuple(rest))


def long_conversation(index: int, turns: int, rng: random.Random) -> Conversation:
    """Six facts within the first turns, each asked back 40-90 turns on (earlier where the conversation ends
    first), plain questions and small talk everywhere else (none twice), and one thanks in the second half."""
    fields = persona(index, rng)
    pairs = [fact_turns(kind, fields, rng) for kind in ["name", "job", "age", "pet", "home", "plan"]]
    slots: list[Turn | None] = [None] * turns
    tells = sorted(rng.sample(range(min(LONG_FACT_SPAN, turns)), len(pairs)))
    tells[0] = 0  # the user introduces themselves first
    for (tell, ask), at in zip(pairs, tells, strict=True):
        slots[at] = tell
        target = min(at + rng.randint(*LONG_ASK_AFTER), turns - 1)
        while target > at and slots[target] is not None:
            target -= 1
        if target > at:
            slots[target] = ask
    free = [i for i, turn in enumerate(slots) if turn is None]
    thanks = rng.choice([i for i in free if i >= turns // 2] or free)
    slots[thanks] = Turn(rng.choice(THANKS), "thanks")
    questions = rng.sample(PLAIN_QUESTIONS, len(PLAIN_QUESTIONS))
    asked = {question for question, _ in questions}
    small = small_talk_pool(rng)
    for i in (i for i in free if i != thanks):
        if rng.random() < 0.6 or not small:
            if not questions:
                while (extra := arithmetic(rng))[0] in asked:
                    pass
                asked.add(extra[0])
                questions.append(extra)
            question, answers = questions.pop()
            slots[i] = Turn(question, "plain", answers=tuple(answers))
        else:
            slots[i] = Turn(small.pop(), "small")
    return Conversation(f"long-{index}", tuple(turn for turn in slots if turn is not None))


def conversations(short: int = 30, long: int = 5, long_turns: int = 110, seed: int = 0) -> list[Conversation]:
    """`short` conversations of 8-16 turns, then `long` of `long_turns` turns; the same for the same seed."""
    rng = random.Random(seed)
    made = [short_conversation(i, rng) for i in range(short)]
    return made + [long_conversation(short + i, long_turns, rng) for i in range(long)]


def identity_swap(reply: str, told: list[Turn]) -> bool:
    """Whether `reply` says one of the `told` facts in the first person, as the assistant's own."""
    text = reply.lower().replace("\u2019", "'")
    return any(turn.claim is not None and re.search(turn.claim, text) for turn in told)
