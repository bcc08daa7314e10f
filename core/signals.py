"""Signals core sends for the apps to act on, so that core imports none of them."""
from django.dispatch import Signal

# Sent with `client_id` when a client's batched deletion starts (core.services
# client_delete_in_batches), its keys revoked, before it deletes anything: the jobs app stops
# its deliveries (jobs/deletion.py). A receiver's error stops the deletion before it begins.
client_deletion_started = Signal()
