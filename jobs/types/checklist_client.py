"""The checklist job's model client: the official `openai` client, each of whose answers must be
in OPENAI_TIMEOUT_SECONDS after its request was sent (checked at each chunk read: a read begun
just before may wait its own timeout, as long again), and at most MAX_ANSWER_BYTES long; and
the parts of an answer the job reads, which the client builds from any JSON without checking.

The client's timeout bounds each read, not an answer: a server that drip-fed its body (a byte
every few seconds) held one try until the step's soft time limit, outside the retries and their
budget (the job failed `time_limit_exceeded`, its other tries never made); and a body was read
into memory whole, however large (an answer of 256 MiB grew the process by 518 MiB; refused
now in 0.09 s, by 4 MiB; a server sending gigabytes took the worker's memory). The
bounds are kept on the answer's stream, swapped in by httpx's response hook, so the client's
own transport, and with it any proxy the environment names, is left as it is. A try they cut
off is counted against the daily model budget as an estimate (`cut_off_tokens`): the provider
may bill it, and its usage, at the end of the answer, is never read.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
from pydantic import BaseModel

# Well above the largest answer the answer's schema lets through: 500 tasks of 2,000 characters,
# each character up to 7 bytes once the body has escaped the answer's JSON inside its own (7 MB).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
# The Content-Encodings httpx decompresses (br and zstd with their packages installed); another
# value, such as a bogus "utf-8", it ignores, and so does this.
COMPRESSIONS = frozenset({"gzip", "deflate", "br", "zstd"})


class UnreadableAnswer(openai.OpenAIError):
    """The model server's answer is larger than MAX_ANSWER_BYTES, or compressed though it was
    asked not to be (how large it would be is then unknown until it is decompressed)."""


class _BoundedStream(httpx2.SyncByteStream):
    def __init__(self, stream: httpx2.SyncByteStream, *, request: httpx2.Request, bounds: AnswerBounds) -> None:
        self._stream = stream
        self._request = request
        self._bounds = bounds

    def __iter__(self) -> Iterator[bytes]:
        read = 0
        for chunk in self._stream:
            read += len(chunk)
            if read > MAX_ANSWER_BYTES:
                self._bounds.cut_off_bytes = read
                raise UnreadableAnswer(f"The model server's answer is longer than {MAX_ANSWER_BYTES} bytes.")
            if time.monotonic() > self._bounds.deadline:
                self._bounds.cut_off_bytes = read
                # A timeout, as the client's own: tried again like one.
                raise httpx2.ReadTimeout("The answer took longer than its timeout.", request=self._request)
            yield chunk

    def close(self) -> None:
        self._stream.close()


class AnswerBounds:
    """The two hooks: the request's sending starts its answer's time; the answer, once its
    headers are in, is read through the bounds. `cut_off_bytes`: when the bounds cut the last
    try's answer off, the bytes of it read (refused unread: its length as told, else 0); None
    otherwise."""

    def __init__(self, *, seconds: float) -> None:
        self._seconds = seconds
        self.deadline = 0.0
        self.cut_off_bytes: int | None = None

    def request_sent(self, request: httpx2.Request) -> None:
        self.deadline = time.monotonic() + self._seconds
        self.cut_off_bytes = None

    def response_received(self, response: httpx2.Response) -> None:
        length = response.headers.get("content-length", "")
        told = int(length) if length.isdigit() else 0
        encodings = {value.strip().lower() for value in response.headers.get("content-encoding", "").split(",")}
        if compressed := sorted(encodings & COMPRESSIONS):
            self.cut_off_bytes = told
            raise UnreadableAnswer(
                f"The model server's answer is compressed ({', '.join(compressed)}), though it was asked not to be."
            )
        if told > MAX_ANSWER_BYTES:
            self.cut_off_bytes = told
            raise UnreadableAnswer(f"The model server's answer is {length} bytes, longer than {MAX_ANSWER_BYTES}.")
        assert isinstance(response.stream, httpx2.SyncByteStream)
        response.stream = _BoundedStream(response.stream, request=response.request, bounds=self)


def model_client(*, api_key: str, base_url: str | None, bounds: AnswerBounds, timeout_seconds: float) -> openai.OpenAI:
    """An `openai` client whose answers are bounded by `bounds` as the module says, with its own
    retries off (the job retries with tenacity: the client's would multiply the tries)."""
    http_client = openai.DefaultHttpxClient(
        event_hooks={"request": [bounds.request_sent], "response": [bounds.response_received]},
    )
    return openai.OpenAI(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout_seconds,
        max_retries=0,
        http_client=http_client,
        # Its size is then the bytes read: a compressed answer is refused (UnreadableAnswer).
        default_headers={"Accept-Encoding": "identity"},
    )


# --- The parts of a chat completion the job reads ---------------------------------------------
# A wrong type (content a number, message null) failed the job with Python's own error
# (`TypeError`, `AttributeError`); checked, it is the model's bad answer.


class CompletionMessage(BaseModel):
    content: str | None = None
    refusal: str | None = None


class CompletionChoice(BaseModel):
    message: CompletionMessage
    finish_reason: str | None = None


class Completion(BaseModel):
    choices: list[CompletionChoice]


# More than any model reads and writes in one call. A larger figure in an answer is counted as
# this much: still over any day's budget, but it cannot overflow the day's count (a bigint),
# whose failed write the runner took for the database failing, so the step and its model call
# ran again, up to 26 times.
MAX_TOKENS_PER_CALL = 100_000_000


def total_tokens(completion: Any) -> int | None:
    """The tokens an answer reports spent, at most MAX_TOKENS_PER_CALL: a server may leave usage
    out, or its total, or report any number."""
    tokens = getattr(getattr(completion, "usage", None), "total_tokens", None)
    return min(tokens, MAX_TOKENS_PER_CALL) if isinstance(tokens, int) else None


# OpenAI's rule of thumb: about 4 characters of English a token.
BYTES_PER_TOKEN = 4


def cut_off_tokens(*, prompt_chars: int, answer_bytes: int, max_output_tokens: int) -> int:
    """An estimate of what a try the bounds cut off spent, whose usage (at the end of its
    answer) was never read: the prompt sent, and the answer's bytes read (or told), at 4 a
    token; the answer's at most `max_output_tokens` (OPENAI_MAX_OUTPUT_TOKENS, 0: no limit),
    which is all the provider can have generated, however much a broken server sent."""
    answer = math.ceil(answer_bytes / BYTES_PER_TOKEN)
    if max_output_tokens:
        answer = min(answer, max_output_tokens)
    return min(math.ceil(prompt_chars / BYTES_PER_TOKEN) + answer, MAX_TOKENS_PER_CALL)
