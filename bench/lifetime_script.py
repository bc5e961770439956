"""What bench.lifetime's agent lives through and is probed with, written for the benchmark.

A life is a seeded sequence of chat sessions: single plain questions (what most turns of a chat agent are), and
conversations in which the user tells facts about themselves among small talk and asks some back. The probes are
never part of a life: held-out plain questions (bench.talk's), one conversation of new facts, and the life's own
facts asked in a new session.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.talk import FACTS as PROBE_QUESTIONS

__all__ = ["LIFE_QUESTIONS", "PROBE_CONVERSATION", "PROBE_QUESTIONS", "Session", "life"]

# (question, accepted answers): asked during a life, never as a probe.
LIFE_QUESTIONS = [
    ("What is the capital of Portugal?", ["lisbon"]),
    ("What is the capital of Greece?", ["athens"]),
    ("What is the capital of Ireland?", ["dublin"]),
    ("What is the capital of Austria?", ["vienna"]),
    ("What is the capital of Norway?", ["oslo"]),
    ("What is the capital of Canada?", ["ottawa"]),
    ("What is the capital of China?", ["beijing"]),
    ("What is the capital of Poland?", ["warsaw"]),
    ("What is 6 + 1?", ["7", "seven"]),
    ("What is 4 times 2?", ["8", "eight"]),
    ("What is 9 minus 4?", ["5", "five"]),
    ("What is 12 divided by 3?", ["4", "four"]),
    ("What colour is a ripe tomato?", ["red"]),
    ("What colour is milk?", ["white"]),
    ("What colour is the sea on a sunny day?", ["blue"]),
    ("How many months are in a year?", ["12", "twelve"]),
    ("How many legs does a dog have?", ["4", "four"]),
    ("How many hours are in a day?", ["24", "twenty"]),
    ("What do bees make?", ["honey"]),
    ("What is frozen water called?", ["ice"]),
    ("Which animal is known as the king of the jungle?", ["lion"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What is the closest star to the Earth?", ["sun"]),
    ("What gas do plants take in from the air?", ["carbon dioxide", "co2"]),
    ("Which planet is known as the red planet?", ["mars"]),
    ("What is the largest ocean on Earth?", ["pacific"]),
    ("What language is spoken in Brazil?", ["portuguese"]),
    ("How many sides does a triangle have?", ["3", "three"]),
    ("What is the boiling point of water in Celsius?", ["100"]),
    ("Who wrote Romeo and Juliet?", ["shakespeare"]),
]

# Facts a user tells about themselves: (statement, question asked back, accepted answers).
LIFE_FACTS = [
    ("My name is Quentin and I work as a glassblower.", "What is my job?", ["glassblower", "glass"]),
    ("My daughter Ines is turning seven next week.", "How old is Ines turning?", ["7", "seven"]),
    ("Our cat is called Pistachio.", "What is my cat called?", ["pistachio"]),
    ("My car is a green 1998 Volvo.", "What colour is my car?", ["green"]),
    ("I grew up in the town of Bergamo.", "Where did I grow up?", ["bergamo"]),
    ("My favourite food is mushroom risotto.", "What is my favourite food?", ["risotto"]),
    ("My brother Tobias plays the cello.", "What instrument does my brother play?", ["cello"]),
    ("I am allergic to peanuts.", "What am I allergic to?", ["peanut"]),
    ("My flat is on the fourth floor.", "Which floor is my flat on?", ["fourth", "4"]),
    ("I run every morning along the canal.", "Where do I run?", ["canal"]),
]

SMALL_TALK = [
    "Thanks, that helps.",
    "The weather is lovely today.",
    "I had a long day at work.",
    "Can you suggest a good book to read?",
    "What should I cook tonight?",
    "Tell me something interesting.",
    "I might go for a walk later.",
    "Do you like music?",
]

# A conversation of its own, for the probes: four facts, two unrelated questions, the four asked back.
PROBE_CONVERSATION = [
    ("Hi, I'm Elena and I work as a pharmacist.", None, None),
    ("My son Marco is nine years old.", None, None),
    ("We have a dog named Biscuit.", None, None),
    ("I live in the city of Trieste.", None, None),
    ("What is the capital of Sweden?", None, None),
    ("How many wheels does a bicycle have?", None, None),
    ("What's my name?", ["elena"], "in_session"),
    ("How old is Marco?", ["9", "nine"], "in_session"),
    ("What is my dog's name?", ["biscuit"], "in_session"),
    ("Which city do I live in?", ["trieste"], "in_session"),
]


@dataclass(frozen=True)
class Session:
    turns: list[str]  # the user's messages, in order
    facts: list[tuple[str, list[str]]]  # what it tells about the user: (question asking it back, answers)


def life(turns: int, seed: int) -> list[Session]:
    """Sessions of at least `turns` user turns. Two sessions in three are a single plain question; the third is
    a conversation: three facts, small talk, and the first fact asked back six turns after it was told."""
    rng = random.Random(seed)
    questions = LIFE_QUESTIONS[:]
    facts = LIFE_FACTS[:]
    rng.shuffle(questions)
    rng.shuffle(facts)
    sessions: list[Session] = []
    count = 0
    while count < turns:
        if len(sessions) % 3 == 2 and len(facts) >= 3:
            chosen, facts = facts[:3], facts[3:]
            chat = [statement for statement, _, _ in chosen] + rng.sample(SMALL_TALK, 3) + [chosen[0][1]]
            told = [(question, answers) for _, question, answers in chosen]
        else:
            question, _ = questions[len(sessions) % len(questions)]
            chat, told = [question], []
        sessions.append(Session(chat, told))
        count += len(chat)
    return sessions
