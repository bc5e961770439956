"""Celery app and thin tasks that call into learner/ and memory/."""
