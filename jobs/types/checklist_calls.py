"""One try of the checklist job's model call (checklist.py retries them): the provider's breakers
asked first and told the outcome (checklist_breaker.py), the request, with its answer's bounds
(checklist_client.py), and what a try those bounds cut off spent, counted against its client's
daily model budget."""
from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import openai
from django.conf import settings

from core import metrics
from jobs.types import checklist_breaker
from jobs.types import checklist_prompts as prompts
from jobs.types.base import StepContext
from jobs.types.checklist_client import (
    AnswerBounds,
    cut_off_tokens,
    model_client,
    total_tokens,
)

# The client refuses to start without a key, but a self-hosted server behind OPENAI_BASE_URL
# often needs none; it is sent this placeholder instead.
KEYLESS_PLACEHOLDER = "not-needed"


class ModelTries:
    """The model client of one call's tries, opened and closed with it."""

    def __init__(self) -> None:
        self._bounds = AnswerBounds(seconds=settings.OPENAI_TIMEOUT_SECONDS)
        # OPENAI_BASE_URL is operator configuration, not user input, so it does not go through the
        # webhook client's private-network guard: a model served on localhost is a normal set-up.
        self._client = model_client(
            api_key=settings.OPENAI_API_KEY or KEYLESS_PLACEHOLDER,
            base_url=settings.OPENAI_BASE_URL or None,
            bounds=self._bounds,
            timeout_seconds=settings.OPENAI_TIMEOUT_SECONDS,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._client.close()

    def attempt(self, ctx: StepContext, messages: Sequence[prompts.ChatMessage]) -> Any:
        """One try: the completion, or the client's error (OpenAIError) as it raised it;
        ProviderUnavailable, unsent, while the provider's breaker or the job's client's is open
        (checklist_breaker.py)."""
        probes = checklist_breaker.before_call(client_id=ctx.owner_id)
        started = time.monotonic()
        try:
            completion = self._client.chat.completions.create(
                model=settings.OPENAI_MODEL,
                messages=messages,  # type: ignore[arg-type]
                # JSON mode: widely supported by OpenAI-compatible servers, unlike json_schema;
                # the shape itself is checked with pydantic (checklist.py).
                response_format={"type": "json_object"},
                # So a document cannot talk the model into an answer of any length.
                max_completion_tokens=settings.OPENAI_MAX_OUTPUT_TOKENS or openai.omit,
            )
        except openai.OpenAIError as error:
            checklist_breaker.after_call(client_id=ctx.owner_id, probes=probes, error=error)
            self._count_cut_off(ctx, messages)
            raise
        checklist_breaker.after_call(client_id=ctx.owner_id, probes=probes, error=None)
        metrics.model_answered(model=settings.OPENAI_MODEL, seconds=time.monotonic() - started,
                               tokens=total_tokens(completion))
        return completion

    def _count_cut_off(self, ctx: StepContext, messages: Sequence[prompts.ChatMessage]) -> None:
        """A try the answer's bounds cut off (too large, too slow) was answered, and the provider
        may bill it: its estimate is counted. A try that failed before any answer came (a
        timeout waiting for one, a lost connection, an error status) is not: in an outage the
        provider has generated nothing, and a client is not charged for it."""
        if (answer_bytes := self._bounds.cut_off_bytes) is None:
            return
        prompt_chars = sum(len(message["content"]) for message in messages)
        ctx.after_model_call(cut_off_tokens(
            prompt_chars=prompt_chars, answer_bytes=answer_bytes, max_output_tokens=settings.OPENAI_MAX_OUTPUT_TOKENS,
        ))
