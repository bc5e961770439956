"""Request and response bodies of the HTTP API, one group per resource."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from memory.schema import MAX_ID
from models import SamplingConfig

SAMPLING = SamplingConfig()  # the defaults a request may override
MAX_VERSION = 2**31 - 1  # weight version numbers are SQL INTEGERs (PostgreSQL refused 2**31: a 500)
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64 bits; larger seeds were a 500
# Text that reaches a SQL text column or a query on one: PostgreSQL text cannot hold NUL, so a name, a tag or
# a search term holding one is refused (422 naming the field). What a person says (messages, documents) may
# hold any Unicode: it is stored as bytes, and a memory's readable text shows NUL as U+FFFD
# (memory.store.display_text).
NO_NUL = r"^[^\x00]*$"

T = TypeVar("T")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable and machine-readable: invalid_request, malformed_json, not_found, ...")
    message: str = Field(description="a sentence a person can act on")
    type: str = Field(description="OpenAI's error type: invalid_request_error, authentication_error, ...")
    param: str | None = Field(None, description="the field at fault, where one is")


class ErrorBody(BaseModel):
    error: ErrorDetail


# Every error status the API answers, documented on every operation (a route answers those that apply).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description} for status, description in (
        (400, "invalid input on the OpenAI-compatible routes, or a feature they do not support"),
        (401, "no API key, or an unknown or revoked one"),
        (403, "an agent key on an admin route"),
        (404, "no such resource, or one of another agent"),
        (409, "in use, or a state this agent cannot continue"),
        (413, "a body past the server's limits"),
        (415, "a content type the route does not take"),
        (422, "invalid input: the message names the field"),
        (431, "request headers past the server's limit"),
        (503, "a dependency (database, broker) is unavailable"),
    )
}


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null on the last")


# -- agents and keys ---------------------------------------------------------------------------


class AgentCreate(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="unique; letters, digits, '_', '.', '-' (it is the model name of /v1/chat/completions)",
    )
    base_checkpoint: str | None = Field(
        None, max_length=500, pattern=NO_NUL, description="an installed model's name (`lifelong models list`), "
        "'small', a model directory or .gguf file on the server, or 'preset:NAME'; default: the server's"
    )
    learning: dict[str, Any] | None = Field(
        None, description="online learning settings (learning_rate, trainable, ...)"
    )


class AgentPublic(BaseModel):
    id: int
    name: str
    base_checkpoint: str
    learning: dict[str, Any]
    created_at: datetime
    weight_version: int
    memory_count: int = Field(description="memory rows (spans of up to 64 tokens)")
    bytes_learned: int
    queue_lag: int = Field(description="events logged and not yet learned (nor failed)")


class KeyCreate(BaseModel):
    agent_id: int | None = Field(None, ge=1, le=MAX_ID, description="the agent the key may touch; null: an admin key")
    name: str = Field("", max_length=200, pattern=NO_NUL)


class KeyPublic(BaseModel):
    id: int
    agent_id: int | None
    name: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(BaseModel):
    id: int
    key: str = Field(description="shown once; only its hash is stored")
    agent_id: int | None
    name: str


# -- sessions and messages ---------------------------------------------------------------------


class SessionPublic(BaseModel):
    id: int
    agent_id: int
    kind: Literal["chat", "stream"]
    position: int = Field(description="tokens the session's streaming state has read")
    events: int = Field(description="events in the session's log")
    created_at: datetime
    updated_at: datetime


class MessageCreate(BaseModel):
    content: str = Field(min_length=1, description="the user's message (UTF-8)")
    stream: bool = Field(False, description="reply as Server-Sent Events")
    max_tokens: int = Field(256, ge=1, le=65_536, description="the reply's budget in the model's tokens")
    max_bytes: int | None = Field(None, ge=1, le=65_536,
                                  description="a byte budget as well (the server's max_reply_bytes at most)")
    temperature: float = Field(SAMPLING.temperature, ge=0, le=5, description="below 0.001 (0 included): greedy")
    top_p: float = Field(SAMPLING.top_p, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="fixes the sample for a given state")
    repetition_penalty: float = Field(SAMPLING.repetition_penalty, ge=1, le=5,
                                      description="divides the logits of tokens already in the reply; 1: off")
    no_repeat_ngram: int = Field(SAMPLING.no_repeat_ngram, ge=0, le=64,
                                 description="never repeat an n-gram of the reply's tokens; 0: off")


class TurnPublic(BaseModel):
    user_event_id: int
    reply_event_id: int
    content: str
    stop_reason: Literal["end_of_turn", "max_tokens", "max_bytes"]
    weight_version: int
    bytes_in: int
    bytes_out: int
    first_byte_ms: float
    elapsed_ms: float


class MessagePublic(BaseModel):
    id: int
    seq: int
    role: str
    content: str = Field(description="UTF-8; invalid bytes shown as U+FFFD")
    created_at: datetime
    learned: bool
    failed_reason: str | None


# -- documents ---------------------------------------------------------------------------------


class DocumentPublic(BaseModel):
    id: int
    agent_id: int
    name: str
    content_type: str
    status: Literal["receiving", "queued", "learning", "learned", "failed", "forgotten"]
    bytes_received: int
    bytes_learned: int
    failed_reason: str | None
    created_at: datetime
    updated_at: datetime


# -- memories and weights ----------------------------------------------------------------------


class MemoryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    agent_id: int
    event_id: int | None
    document_id: int | None
    session_id: int | None
    imported_from: str | None
    byte_start: int
    byte_end: int
    text: str
    num_tokens: int
    weight_version: int
    created_at: datetime
    hit_count: int  # positions where it supplied at least half of the prediction of what the agent read (memory.hits)
    last_hit_at: datetime | None


class RecallRequest(BaseModel):
    query: str = Field(min_length=1)
    top_k: int = Field(20, ge=1, le=500)


class RecallHitPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    memory_id: int
    score: float  # the fused ranking's (memory.recall): each signal that found it adds weight / (10 + its rank there)
    model_score: float | None  # the model's search: its best pair's share of a head's attention (or cosine)
    token_hits: int  # how many of its pairs the retrieval layer weighed, found by search or followed
    lexical_score: float | None  # its words' BM25 against the query; None when no word matched
    text: str
    event_id: int | None  # provenance, as in a memory: the event it was read from
    document_id: int | None
    session_id: int | None


class ForgetJobPublic(BaseModel):
    """A forget with weights: the replay that takes a source out of the agent's weights (learner.replay)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    agent_id: int
    status: Literal["queued", "replaying", "done", "failed"]
    events_total: int  # events to re-learn (known once replaying)
    events_done: int
    bytes_total: int
    bytes_done: int
    from_version: int | None  # the kept version the replay started from
    result_version: int | None  # the version it published (current from then on)
    failed_reason: str | None
    created_at: datetime
    finished_at: datetime | None


class Deleted(BaseModel):
    deleted: int
    # The forget job taking the source out of the weights (weights=true, and something of it was learned).
    job: ForgetJobPublic | None = None


class Imported(BaseModel):
    imported: int


class VersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    parent_version: int | None
    events_learned_through: int
    tag: str | None
    sha256: str | None  # of its learned tensors: two agents' weights are equal when these are
    # When the behavioural gate fell due: {passed, reason, scores, last_good_scores}. A refused version carries
    # the last good weights, and serving reads those.
    gate: dict[str, Any] | None = None
    created_at: datetime


class RollbackRequest(BaseModel):
    version: int = Field(ge=0, le=MAX_VERSION,
                         description="the version whose weights become current again (0: the base)")


# -- learning scores and base models ----------------------------------------------------------


class ScorePublic(BaseModel):
    """One learned event's prequential score: what the agent paid to read it, before learning from it."""

    event_id: int
    session_id: int
    document_id: int | None
    role: str
    bytes: int = Field(description="the event's bytes")
    bits: float = Field(description="bits the model paid for the event's tokens before its update")
    bits_per_byte: float = Field(description="bits / bytes: 8 is a uniform guess; falls as the agent learns")
    learned_at: datetime


class BaseModelPublic(BaseModel):
    name: str = Field(description="what base_checkpoint names when an agent is created")
    description: str
    licence: str
    installed: bool
    install: str = Field(description="the command that makes it usable")
    chat: bool = Field(description="instruction-tuned: converses; otherwise it continues text")
    tokenizer: str
    size_bytes: int | None = Field(description="on disk, when installed")


class BaseModelList(BaseModel):
    default: str = Field(description="the server's base for an agent created without base_checkpoint")
    data: list[BaseModelPublic]


# -- OpenAI-compatible chat completions --------------------------------------------------------


class ContentPart(BaseModel):
    """One part of a message's content (OpenAI's content parts); only text parts are read."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = Field(None, description="the text of a part of type 'text'")


class ChatMessage(BaseModel):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="send a last chunk with the turn's token counts")


class ChatCompletionRequest(BaseModel):
    model: str = Field(max_length=200, pattern=NO_NUL, description="the agent's name")
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000, description=(
        "the conversation: the last message is the user's new input; the ones before continue the session "
        "whose log they match, or are read in as a new session's first turns"))
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=65_536, description="the reply's budget in the model's tokens")
    max_completion_tokens: int | None = Field(None, ge=1, le=65_536, description="the same as max_tokens")
    temperature: float | None = Field(None, ge=0, le=5)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    repetition_penalty: float | None = Field(None, ge=1, le=5, description="extension: see MessageCreate")
    no_repeat_ngram: int | None = Field(None, ge=0, le=64, description="extension: see MessageCreate")
    session_id: int | None = Field(None, ge=1, le=MAX_ID,
                                   description="continue this session (or header X-Lifelong-Session)")
    stream_options: StreamOptions | None = None
    # Accepted so that a request using them gets a clear 400 instead of being silently half-served.
    n: int | None = Field(None, ge=1, description="only 1: an agent has one reply per turn")
    tools: list[dict[str, Any]] | None = Field(None, description="not supported (400)")
    tool_choice: str | dict[str, Any] | None = Field(None, description="not supported (400)")
    functions: list[dict[str, Any]] | None = Field(None, description="not supported (400)")
    response_format: dict[str, Any] | None = Field(None, description="only {'type': 'text'}")
    logprobs: bool | None = Field(None, description="not supported (400 when true)")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="not supported (400 when set)")


class ModelObject(BaseModel):
    """OpenAI's model object: an agent the key may chat with."""

    id: str = Field(description="the agent's name")
    object: Literal["model"] = "model"
    created: int = Field(description="when the agent was created, Unix seconds")
    owned_by: str = "lifelong"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
