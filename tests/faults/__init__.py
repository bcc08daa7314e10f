"""Fault-injection, load and second-broker tests (`make test-faults`)."""
