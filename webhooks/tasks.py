"""Webhook delivery tasks."""
from celery import shared_task


@shared_task(name="webhooks.deliveries_send_for_subject", ignore_result=True)
def deliveries_send_for_subject(*, subject_id: str) -> None:
    """Placeholder until the webhook delivery lands."""
