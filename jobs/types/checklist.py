"""`api.tasks.generate_checklist_from_guidelines`: guidelines in, a checklist out, via a model.

Three chained steps: summarise the guidelines (model call 1), turn the summary into a checklist
(model call 2), then hand back the result, which the runner stores as the job's result and, since
the type persists results, as a persisted result. Each model answer is parsed as JSON and
validated; a bad answer fails the job with `invalid_model_output` and the validation message.

Model calls go through the official `openai` client with its own retries off, each answer bounded
in tokens (OPENAI_MAX_OUTPUT_TOKENS), time and size (`checklist_client.py`), each try made by
`checklist_calls.py`, and are retried here with tenacity: only transient errors (429, 408, 409,
5xx, timeouts, connection errors), a bounded number of times, with exponential backoff that
honours Retry-After (which errors are transient, and the job's error once a call has failed for
good: `checklist_failures.py`). Nothing here holds a
database transaction or lock while it waits: the status flips (RETRY/STARTED) and progress are
short autocommit writes. Before each call the owner's daily model budget is checked (spent: the
job fails with `model_budget_exhausted`, the model not called), and after it the tokens the
answer reports are counted against it (jobs/model_budget.py), or for a try whose answer was cut
off by its bounds, an estimate (`checklist_calls.py`). Each try is counted by outcome, an
answered one with its duration and tokens (core/metrics.py: nothing is recorded while metrics are off).
"""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import openai
import tenacity
from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core import metrics
from core.parsers import unstorable_character
from core.retry_after import retry_after_seconds
from jobs.types import checklist_prompts as prompts
from jobs.types.base import JobFailed, JobType, RetryLimits, StepContext
from jobs.types.checklist_calls import ModelTries
from jobs.types.checklist_client import Completion, total_tokens
from jobs.types.checklist_failures import (
    MAX_ERROR_DETAIL_CHARS,
    final_outcome,
    is_transient,
    job_failure,
    output_too_long_message,
    redacted,
    retried_outcome,
)

logger = logging.getLogger(__name__)

MAX_GUIDELINES_CHARS = 100_000
# Bounds on what a model may answer; beyond them the answer is off-schema, not a result.
MAX_SUMMARY_CHARS = 50_000
MAX_TASK_CHARS = 2_000
MAX_CHECKLIST_ITEMS = 500


class ChecklistPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, title="ChecklistPayload")

    guidelines: str = Field(
        min_length=1,
        max_length=MAX_GUIDELINES_CHARS,
        pattern=r"\S",
        description=f"The guidelines text, 1 to {MAX_GUIDELINES_CHARS} characters.",
    )


# --- What the model must answer ----------------------------------------------------------------
# Extra keys are ignored (models add them); missing or mistyped ones fail the job.


class SummaryAnswer(BaseModel):
    model_config = ConfigDict(strict=True, str_strip_whitespace=True)

    summary: str = Field(min_length=1, max_length=MAX_SUMMARY_CHARS)


class ChecklistItemAnswer(BaseModel):
    model_config = ConfigDict(strict=True, str_strip_whitespace=True)

    task: str = Field(min_length=1, max_length=MAX_TASK_CHARS)


class ChecklistAnswer(BaseModel):
    model_config = ConfigDict(strict=True)

    checklist: list[ChecklistItemAnswer] = Field(min_length=1, max_length=MAX_CHECKLIST_ITEMS)


# --- The job's result --------------------------------------------------------------------------


class ChecklistItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    # A freshly written checklist has nothing done yet, whatever the model says.
    is_complete: bool = False


class ChecklistResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    summary: str
    checklist: list[ChecklistItem]


def unavailable_reason() -> str | None:
    if not settings.OPENAI_API_KEY and not settings.OPENAI_BASE_URL:
        return "OPENAI_API_KEY is not set (nor OPENAI_BASE_URL), so no model can be called."
    return None


# --- Retrying model calls ----------------------------------------------------------------------


def server_retry_after(error: BaseException | None) -> float | None:
    """The wait the model server asked for: OpenAI's `retry-after-ms`, else `Retry-After`."""
    if not isinstance(error, openai.APIStatusError):
        return None
    headers = error.response.headers
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    return retry_after_seconds(headers.get("retry-after"))


class BackoffOrRetryAfter(tenacity.wait.wait_base):
    """tenacity's exponential backoff with jitter (base, 2x base, 4x base, ... plus up to one
    base, so many workers do not retry in lockstep), but never less than the server's
    Retry-After; both capped at `max_seconds`, so one call's retries stay inside the step's
    time limit."""

    def __init__(self, *, base_seconds: float, max_seconds: float) -> None:
        self.backoff = tenacity.wait_exponential_jitter(
            initial=base_seconds, max=max_seconds, jitter=base_seconds
        )
        self.max_seconds = max_seconds

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.backoff(retry_state)
        outcome = retry_state.outcome
        requested = server_retry_after(outcome.exception() if outcome is not None else None)
        if requested is not None:
            wait = max(wait, requested)
        return min(wait, self.max_seconds)


def _sleep_unless_canceled(ctx: StepContext) -> Callable[[float], None]:
    """A tenacity sleep that still notices a cancel while it waits (JobCanceled ends the job)."""

    def sleep(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ctx.check_canceled()
            time.sleep(min(left, 1.0))

    return sleep


def _complete(ctx: StepContext, messages: list[prompts.ChatMessage]) -> Any:
    """One chat completion, retried on transient errors; JobFailed when it cannot be had."""

    def before_attempt(state: tenacity.RetryCallState) -> None:
        if state.attempt_number > 1:
            ctx.retrying(False)
        ctx.check_canceled()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        # The client's error quotes the server's whole body, however large: its start will do.
        logger.warning(
            "Job %s: model call try %s failed (%s); retrying in %.2f s",
            ctx.job_id, state.attempt_number, redacted(str(error))[:MAX_ERROR_DETAIL_CHARS], state.upcoming_sleep,
        )
        metrics.model_call_failed(model=settings.OPENAI_MODEL, outcome=retried_outcome(error))
        ctx.retrying(True)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(settings.OPENAI_MAX_ATTEMPTS),
        wait=BackoffOrRetryAfter(
            base_seconds=settings.OPENAI_RETRY_BASE_SECONDS, max_seconds=settings.OPENAI_RETRY_MAX_SECONDS
        ),
        before=before_attempt,
        before_sleep=before_sleep,
        sleep=_sleep_unless_canceled(ctx),
        reraise=True,
    )
    with ModelTries() as tries:
        try:
            for attempt in retrying:
                with attempt:
                    return tries.attempt(ctx, messages)
        except openai.OpenAIError as error:
            metrics.model_call_failed(model=settings.OPENAI_MODEL, outcome=final_outcome(error))
            raise job_failure(error, retrying.statistics.get("attempt_number", 1)) from None
    raise AssertionError("unreachable: tenacity either returns or re-raises")


_CODE_FENCE = re.compile(r"\A\s*```(?:json)?\s*\n(.*)\n\s*```\s*\Z", re.DOTALL)

AnswerT = TypeVar("AnswerT", bound=BaseModel)


def _problems(error: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'answer'}: {problem['msg']}"
        for problem in error.errors(include_url=False)[:10]
    )
    return problems[:MAX_ERROR_DETAIL_CHARS * 2]


def parse_answer(text: str, answer_model: type[AnswerT]) -> AnswerT:
    """The model's answer as `answer_model`; JobFailed("invalid_model_output") otherwise."""
    # Some servers ignore JSON mode and wrap the object in a Markdown fence; that much is forgiven.
    fenced = _CODE_FENCE.match(text)
    try:
        data = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as error:
        raise JobFailed(
            "invalid_model_output", f"The model's answer is not valid JSON: {error}."
        ) from None
    try:
        answer = answer_model.model_validate(data)
    except ValidationError as error:
        raise JobFailed(
            "invalid_model_output",
            f"The model's answer does not match the expected {answer_model.__name__} shape: {_problems(error)}",
        ) from None
    # Stored, it would fail the write of the step's output (taken for the database failing: the
    # step, and its model call, ran again and again). Only what is kept is looked at: the schema
    # ignores extra keys, and refuses a lone surrogate already.
    if (character := unstorable_character(answer.model_dump())) is not None:
        raise JobFailed(
            "invalid_model_output",
            f"The model's answer contains the character {character}, which a result cannot hold.",
        )
    return answer


def _answer(ctx: StepContext, messages: list[prompts.ChatMessage], answer_model: type[AnswerT]) -> AnswerT:
    ctx.before_model_call()
    completion = _complete(ctx, messages)
    # Spent whatever the answer turns out to be worth; an answer without the figure is not counted.
    if (tokens := total_tokens(completion)) is not None:
        ctx.after_model_call(tokens)
    try:
        read = Completion.model_validate(completion, from_attributes=True)
    except ValidationError as error:
        raise JobFailed(
            "invalid_model_output", f"The model server's answer is not a chat completion: {_problems(error)}"
        ) from None
    if not read.choices:
        raise JobFailed("invalid_model_output", "The model's answer has no choices.")
    choice = read.choices[0]
    refusal = choice.message.refusal
    if refusal:
        raise JobFailed("invalid_model_output", f"The model refused: {refusal}"[:MAX_ERROR_DETAIL_CHARS])
    if choice.finish_reason == "length":
        # Spent in full, and the same text would very likely be answered as long again.
        raise JobFailed("model_output_too_long", output_too_long_message(), retryable=False)
    if choice.finish_reason == "content_filter":
        # What is left of it (often a fragment) would only fail as JSON, saying nothing of why.
        raise JobFailed("invalid_model_output", "The model's answer was withheld by the provider's content filter.")
    if not choice.message.content:
        raise JobFailed("invalid_model_output", "The model's answer is empty.")
    return parse_answer(choice.message.content, answer_model)


# --- The steps ---------------------------------------------------------------------------------


def summarise(ctx: StepContext, previous: Any) -> dict[str, Any]:
    payload = ChecklistPayload.model_validate(ctx.payload)
    ctx.progress(1, 2, "summarising")
    answer = _answer(ctx, prompts.summary_messages(payload.guidelines), SummaryAnswer)
    return {"summary": answer.summary}


def write_checklist(ctx: StepContext, previous: Any) -> dict[str, Any]:
    summary = SummaryAnswer.model_validate(previous).summary
    ctx.progress(2, 2, "writing checklist")
    answer = _answer(ctx, prompts.checklist_messages(summary), ChecklistAnswer)
    result = ChecklistResult(
        summary=summary, checklist=[ChecklistItem(task=item.task) for item in answer.checklist]
    )
    return result.model_dump()


def persist(ctx: StepContext, previous: Any) -> dict[str, Any]:
    """The chain's last step: what it returns is written as the job's result and, in the same
    transaction as SUCCESS, as its persisted result (the type has persist_result=True)."""
    return ChecklistResult.model_validate(previous).model_dump()


# Each step's retries must fit inside its soft time limit, whatever the settings say.
_STEP_BUDGET_SECONDS = int(
    settings.OPENAI_MAX_ATTEMPTS * (settings.OPENAI_TIMEOUT_SECONDS + settings.OPENAI_RETRY_MAX_SECONDS)
) + 30

JOB_TYPE = JobType(
    name="api.tasks.generate_checklist_from_guidelines",
    description=(
        "Summarises guidelines, then turns the summary into a checklist, with a model "
        "(OpenAI or any OpenAI-compatible server)."
    ),
    payload_model=ChecklistPayload,
    steps=(summarise, write_checklist, persist),
    soft_time_limit_seconds=_STEP_BUDGET_SECONDS,
    time_limit_seconds=_STEP_BUDGET_SECONDS + 30,
    persist_result=True,
    unavailable_reason=unavailable_reason,
    uses_model=True,
    # The guidelines' characters may take up to 4 bytes each in UTF-8.
    max_payload_bytes=4 * MAX_GUIDELINES_CHARS + 1024,
    # A model may answer badly once and well the next time.
    retry_limits=RetryLimits(max_attempts=5, max_backoff_seconds=3600),
)
