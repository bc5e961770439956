"""Which recalled memories a note reads (agent.recall_note.worth_noting), which of their sentences it reads
first (asked_sentence_first), and what of the session's own log it reads before the worker has learned it."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from sqlalchemy import update

from agent.recall_note import asked_sentence_first, excerpt, session_statements, sources_of, worth_noting
from memory.eventlog import append_events
from memory.recall import RecallHit
from memory.schema import Document, Event, Memory
from models import ByteTokenizer
from tests.learning import db_url, empty_db_url, new_agent, sessions  # noqa: F401 - fixtures

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


def _hit(memory_id: int, score: float, text: str) -> RecallHit:
    return RecallHit(memory_id=memory_id, score=score, model_score=score, token_hits=1, lexical_score=None, text=text,
                     event_id=None, document_id=None, session_id=None)


def test_a_note_reads_memories_scoring_enough_and_the_best_one_sharing_a_word_with_the_message():
    dog = _hit(1, 0.12, "My dog is called Pixel.")
    licence = _hit(2, 0.11, "the licence of the dog food")
    vault = _hit(3, 0.35, "The vault combination is 5-2-6-0-1.")
    # Ranked first and sharing "dog" with the question: read whatever its share of attention.
    assert worth_noting([dog, licence], "What is my dog called?", 0.2) == [dog]
    # Only the best is read on its words: the second shares "dog" too, but needs the score.
    assert worth_noting([dog, licence], "What is my dog called?", 0.1) == [dog, licence]
    # A best hit that shares no word (function words and single characters are not words here) needs the score,
    assert worth_noting([licence, vault], "What is my PIN?", 0.2) == [vault]
    # and a question about the user: one about the world is never answered by a memory sharing none of its words.
    assert worth_noting([licence, vault], "What is the capital of France?", 0.2) == []
    assert worth_noting([dog], "What colour is it?", 0.2) == []
    assert worth_noting([], "What is my dog called?", 0.2) == []


def test_a_question_about_the_world_is_not_noted_what_the_user_planned():
    # A new user's trip scored 0.34 for "What is the capital of Spain?" and was answered instead of Madrid.
    trip = _hit(1, 0.34, "I'm planning a trip to Lisbon in March.")
    assert worth_noting([trip], "What is the capital of Spain?", 0.2) == []
    assert worth_noting([trip], "Where am I going in March?", 0.2) == [trip]  # shares "March"
    assert worth_noting([trip], "Where are we off to soon?", 0.2) == [trip]  # about the user: meaning may do


def test_what_people_say_of_themselves_is_found_in_other_words():
    name = _hit(1, 0.05, "Hi! I'm Quentin.")
    job = _hit(2, 0.05, "I work as a glassblower in Murano.")
    cat = _hit(3, 0.05, "We have a cat called Pistachio.")
    assert worth_noting([job, name], "What's my name?", 0.2) == [name]
    assert worth_noting([name, job], "What do I do for a living?", 0.2) == [job]
    assert worth_noting([name, job, cat], "What is my cat's name?", 0.2) == [cat]
    # Not in a document: there, "works" is a licence's, not a job.
    licence = RecallHit(memory_id=4, score=0.05, model_score=0.05, token_hits=1, lexical_score=None,
                        text="software and other kinds of works", event_id=None, document_id=7, session_id=None)
    assert worth_noting([licence], "What is my job?", 0.2) == []


def test_a_title_does_not_end_a_sentence():
    notes = "Notes from Tuesday. The meeting with Dr. Okafor was in Tromso. Mr. Lund keeps the key."
    assert asked_sentence_first(notes, "Where was Okafor?").startswith("The meeting with Dr. Okafor was in Tromso.")
    assert excerpt(notes, "Where was Okafor?", 50) == "The meeting with Dr. Okafor was in Tromso."


def test_a_final_s_is_not_a_different_word():
    # "live" and "lives" once had different stems, and "Where does my sister live?" shared only "sister".
    assert asked_sentence_first("Notes. She lives in Lyon.", "Where does she live?").startswith("She lives in Lyon.")
    assert asked_sentence_first("Notes. The class is at 9.", "Which classes?").startswith("The class is at 9.")


def test_a_message_asks_with_its_question_mark_or_its_first_word():
    from agent.recall_note import asks

    for message in ("Where does my sister live?", "tell me my locker number", "What's the code", "  Who won?  "):
        assert asks(message), message
    for message in ("My sister's name is Oriane and she lives in Lyon.", "I'm back.", "", "ok"):
        assert not asks(message), message


def test_a_statement_is_noted_only_what_shares_a_word_with_it():
    trip = _hit(1, 0.45, NOTES)
    sister = _hit(2, 0.3, "My sister's name is Oriane.")
    statement = "My sister moved to Lyon."
    # Told something, the agent is not reminded of an unrelated memory however well it scored ...
    assert worth_noting([trip], "My sister's name is Oriane and she lives in Lyon.", 0.2) == []
    # ... but of one about the same thing.
    assert worth_noting([trip, sister], statement, 0.2) == [sister]


def test_a_memory_about_what_is_asked_is_read_without_the_others():
    sister = _hit(1, 0.38, "My sister's name is Oriane and she lives in Lyon.")
    trip = _hit(2, 0.26, NOTES)
    address = _hit(3, 0.3, "I live at 14 Rue Lamarck, Paris.")
    assert worth_noting([sister, trip], "Where does my sister live?", 0.2) == [sister]
    # Ranked above it, the trip's notes stay: the search may know a meaning the words do not show.
    assert worth_noting([trip, sister], "Where does my sister live?", 0.2) == [trip, sister]
    # When none shares a word with the question, the search's ranking is all there is.
    assert worth_noting([address, trip], "Where do I stay?", 0.2) == [address, trip]
    # "home" and "live" are one concept: the address shares it, and the trip's notes below it are left out.
    assert worth_noting([address, trip], "What is my home?", 0.2) == [address]
    # Ranked above a memory sharing a word, one sharing none is recall by meaning, and is read.
    licence = _hit(4, 0.25, "the address of the Free Software Foundation")
    assert worth_noting([address, licence, trip], "What is my address?", 0.2) == [address, licence]


def test_what_the_user_said_in_the_session_is_found_in_the_log_unless_it_left_the_window_learned(sessions):
    _, session_id = new_agent(sessions, "lagging")
    told = [("user", b"My car is a green 1998 Volvo."), ("assistant", b"Noted."),
            ("user", b"My locker number is 4417."), ("assistant", b"Noted too."),
            ("user", b"What colour is my car?"), ("assistant", b"Green.")]
    filler = [(role, f"{role} turn {i} about the weather and nothing else".encode())
              for i in range(20) for role in ("user", "assistant")]
    with sessions.begin() as db:
        events = append_events(db, session_id=session_id, events=[*told, *filler])
        locker = events[2].id
    tokenizer = ByteTokenizer()
    position = 1 + sum(len(e.content) + 2 for e in events)  # the byte model: one token per byte, a turn's frame
    model = SimpleNamespace(config=SimpleNamespace(context_tokens=400), tokenizer=tokenizer)
    state = SimpleNamespace(position=position)

    def noted(asked: str, context_tokens: int = 400) -> list[str]:
        model.config.context_tokens = context_tokens
        with sessions() as db:
            return session_statements(db, model=model, session_id=session_id, state=state,
                                      events_read=len(events), asked=asked)

    # Out of the window, not learned: the user's statement sharing words with the question, not its question
    # asked before, nor the agent's reply.
    assert noted("Which car do I drive?") == ["My car is a green 1998 Volvo."]
    assert noted("Tell me my locker number") == ["My locker number is 4417."]
    assert noted("Nice weather today.") == []  # asks nothing
    # Still in the window: read again beside the question all the same (a small model answers from it).
    assert noted("Which car do I drive?", context_tokens=position) == ["My car is a green 1998 Volvo."]
    with sessions.begin() as db:  # once learned and out of the window, it is a memory: recall's to find
        db.execute(update(Event).where(Event.id == locker).values(learned_at=datetime.now(UTC)))
    assert noted("Tell me my locker number") == []
    assert noted("Tell me my locker number", context_tokens=position) == ["My locker number is 4417."]


def test_a_long_memory_is_read_as_its_sentences_sharing_the_words_asked_within_the_budget():
    chunk = "\n".join([
        "1:56 pm on 8 May, 2023",
        "Caroline: Hey Mel! Good to see you! How have you been?",
        "Melanie: Swamped with the kids and work. What's up with you?",
        "Caroline: I went to an LGBTQ support group yesterday and it was so powerful.",
        "Melanie: Wow, that's cool. What happened at the group?",
        *(f"Melanie: A filler line number {i} about painting and the weather." for i in range(40)),
        "Caroline: The transgender stories at the support group were so inspiring.",
    ])
    read = excerpt(chunk, "When did Caroline go to the LGBTQ support group?", 200)
    assert read.startswith("Caroline: I went to an LGBTQ support group yesterday")
    assert len(read.encode()) <= 200 and "filler" not in read
    assert "The transgender stories at the support group" in read  # the other sentences sharing words, in order
    # No sentence shares a word: nothing of it is read (which part the search meant cannot be told).
    assert excerpt(chunk, "Quelle heure est-il?", 80) == ""
    # Short enough: read whole, the asked sentence first, as before.
    assert excerpt(NOTES, "Who is the guide?", 1000) == asked_sentence_first(NOTES, "Who is the guide?")


def test_a_note_says_where_and_when_each_memory_was_read(sessions):
    agent_id, chat = new_agent(sessions, "a")
    with sessions.begin() as db:
        said = append_events(db, session_id=chat, events=[("user", b"My locker is 4417.")])[0]
        _, [chunk] = _received(db, agent_id)
        rows = [Memory(agent_id=agent_id, event_id=event.id, document_id=event.document_id, session_id=event.session_id,
                       byte_start=0, byte_end=1, text="x", num_tokens=1, head_dim=1, keys=b"\0\0", values=b"\0\0")
                for event in (said, db.get(Event, chunk))]
        db.add_all(rows)
        db.flush()
        db.execute(update(Event).values(created_at=datetime(2023, 5, 8, 13, 56, tzinfo=UTC)))
        db.execute(update(Document).values(created_at=datetime(2024, 2, 29, tzinfo=UTC)))
        ids = [row.id for row in rows]
    with sessions() as db:
        sources = sources_of(db, [_hit(i, 0.5, "x") for i in ids])
    assert sources == {ids[0]: "(you said on 8 May 2023) ",
                       ids[1]: '(from your document "trip notes.txt" of 29 February 2024) '}


def _received(db, agent_id: int):
    from memory.eventlog import receive_document

    return receive_document(db, agent_id=agent_id, data=b"The boat leaves at 7am.", chunk_bytes=64,
                            name="trip notes.txt")
