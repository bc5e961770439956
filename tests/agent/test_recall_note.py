"""Which sentence of a recalled memory the note reads first (agent.recall_note.asked_sentence_first)."""

from __future__ import annotations

from agent.recall_note import asked_sentence_first

NOTES = ("Notes from the trip. The boat leaves from pier 39 at 7am. My locker number is 4417. "
         "The guide is called Marisol.")


def test_the_sentence_sharing_the_asked_words_comes_first_and_nothing_is_lost():
    assert asked_sentence_first(NOTES, "What is my locker number?") == (
        "My locker number is 4417. Notes from the trip. The boat leaves from pier 39 at 7am. "
        "The guide is called Marisol.")
    assert asked_sentence_first(NOTES, "Who is the guide?").startswith("The guide is called Marisol. Notes")
    # Words are compared by their stems: "leave" finds "leaves".
    assert asked_sentence_first(NOTES, "When does it leave?").startswith("The boat leaves from pier 39")
    for question in ("What is my locker number?", "Who is the guide?"):
        assert sorted(asked_sentence_first(NOTES, question).split()) == sorted(NOTES.split())


def test_a_text_stays_as_it_is_when_no_sentence_shares_a_word_that_means_something():
    # "What is the ...": only function words are shared, and they say nothing of what is asked.
    assert asked_sentence_first(NOTES, "What is the address?") == NOTES
    assert asked_sentence_first("The guide is called Marisol.", "Who is the guide?") == "The guide is called Marisol."
    assert asked_sentence_first("first line\nsecond line about boats", "boats?") == "second line about boats first line"


def test_single_characters_are_not_words_in_common():
    # The "s" of "sister's" and "France's" and the "7" of a code say nothing of what is asked.
    notes = "The code is 8-3-9-4-7. My sister's car is red."
    assert asked_sentence_first(notes, "What is France's 7th city?") == notes
    assert asked_sentence_first(notes, "Whose car is red?").startswith("My sister's car is red.")
