"""What a failed model call means for the checklist job: whether another try may succeed
(`is_transient`, what tenacity retries), what kind of failure a retried try is counted as
(`retried_outcome`), and the job's error once it has failed for good (`job_failure`): the
provider's, the configuration's, or the client's input's."""
from __future__ import annotations

import logging

import openai
from django.conf import settings

from jobs.types.base import JobFailed
from jobs.types.checklist_breaker import ProviderUnavailable
from jobs.types.checklist_client import UnreadableAnswer

logger = logging.getLogger(__name__)

# Kept short in error messages: a job's error is for humans, not a dump of the provider's body.
MAX_ERROR_DETAIL_CHARS = 500

# HTTP statuses worth another try besides every 5xx: timeout, lock conflict, rate limit
# (the same set the openai client would retry itself).
TRANSIENT_STATUS_CODES = frozenset({408, 409, 429})

# Every outcome a model call's try is counted under (jobapi_model_calls_total): answered; the kind
# of transient failure another try followed; refused for the client's text (its document longer
# than the model reads: not the provider failing, so not what ModelProviderFailing counts); not
# sent, the provider's breaker open (provider_unavailable); failed for good (the call's last try,
# or an error no retry mends: the job's error says which).
CALL_OUTCOMES = (
    "ok", "rate_limited", "timeout", "connection_error", "server_error", "input_too_long",
    "provider_unavailable", "failed",
)


def is_transient(error: BaseException) -> bool:
    """Whether another try may succeed: rate limits, server errors, timeouts, lost connections."""
    if isinstance(error, openai.APIConnectionError):  # APITimeoutError is one too
        return True
    if isinstance(error, openai.APIStatusError):
        if is_quota_exhausted(error):
            return False  # a 429 too, but no wait brings the credit back
        return error.status_code in TRANSIENT_STATUS_CODES or error.status_code >= 500
    return False


def retried_outcome(error: BaseException | None) -> str:
    """The kind of a transient failure (`is_transient`) that is tried again."""
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection_error"
    status = error.status_code if isinstance(error, openai.APIStatusError) else None
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    return "server_error"  # a 5xx, or a 409 (a lock conflict on the provider's side)


def final_outcome(error: openai.OpenAIError) -> str:
    """What a call that failed for good is counted as: the client's text too long, not sent for
    the breaker, or failed."""
    if isinstance(error, ProviderUnavailable):
        return "provider_unavailable"
    return "input_too_long" if isinstance(error, openai.APIStatusError) and is_input_too_long(error) else "failed"


def is_quota_exhausted(error: openai.APIStatusError) -> bool:
    return error.status_code == 429 and error.code == "insufficient_quota"


def is_input_too_long(error: openai.APIStatusError) -> bool:
    """The text sent is longer than the model reads: OpenAI's code, or the message other
    OpenAI-compatible servers (vLLM, llama.cpp) answer it with."""
    if error.status_code not in (400, 413):
        return False
    return error.code == "context_length_exceeded" or "context length" in error_detail(error).lower()


def error_detail(error: openai.APIError) -> str:
    body = error.body
    message = body.get("message") if isinstance(body, dict) else None
    return redacted(str(message or error.message))[:MAX_ERROR_DETAIL_CHARS]


def redacted(text: str) -> str:
    """`text` from the model server with our API key, where the server quoted it (a gateway
    may, in an error), replaced by the setting's name: a job's error is read by its client and
    carried by its webhooks, a log line by whoever reads the logs."""
    key = settings.OPENAI_API_KEY
    return text.replace(key, "[OPENAI_API_KEY]") if key else text


def output_too_long_message() -> str:
    """The job's error for an answer the provider cut off at its length limit
    (`finish_reason` "length"): at OPENAI_MAX_OUTPUT_TOKENS, or the model's own limit."""
    limit = settings.OPENAI_MAX_OUTPUT_TOKENS
    bound = f"the {limit} tokens an answer may have" if limit else "the model's own length limit"
    return (
        f"The model's answer was cut off at {bound}; a shorter document, or one asking for "
        "fewer tasks, may fit."
    )


def job_failure(error: openai.OpenAIError, attempts: int) -> JobFailed:
    """The job's error for a model call that failed for good."""
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        detail = error_detail(error)
        if is_quota_exhausted(error):
            return JobFailed(
                "model_quota_exceeded",
                f"The model provider says the account's quota is used up (HTTP {status}): {detail}",
            )
        if is_transient(error):
            return JobFailed(
                "model_unavailable",
                f"The model server still failed after {attempts} tries (HTTP {status}): {detail}",
            )
        if is_input_too_long(error):
            # The client's document (or the model's own summary of it), not the configuration:
            # every run would send the same text.
            return JobFailed(
                "input_too_long",
                f"The text is longer than the model ({settings.OPENAI_MODEL}) reads (HTTP {status}); "
                f"send shorter guidelines: {detail}",
                retryable=False,
            )
        if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
            # The provider's words are about our key (OpenAI's quote its first and last
            # characters): the operator's to read, in the worker's log, not the client's.
            logger.warning("The model server refused our credentials (HTTP %s): %s", status, detail)
            return JobFailed(
                "model_auth_error",
                f"The model server refused our credentials (HTTP {status}); check OPENAI_API_KEY "
                "(the provider's answer is in the worker's log).",
            )
        return JobFailed(
            "model_bad_request",
            f"The model server rejected the request (HTTP {status}); check OPENAI_MODEL and "
            f"OPENAI_BASE_URL: {detail}",
        )
    if isinstance(error, UnreadableAnswer):
        return JobFailed("invalid_model_output", str(error))
    if isinstance(error, ProviderUnavailable):
        # Unsent: the job's retry policy may run it again once the provider is back.
        return JobFailed("model_provider_unavailable", str(error))
    if isinstance(error, openai.APIConnectionError):
        return JobFailed(
            "model_unavailable",
            f"The model server could not be reached after {attempts} tries: {error.message}",
        )
    return JobFailed("model_error", redacted(str(error))[:MAX_ERROR_DETAIL_CHARS] or type(error).__name__)
