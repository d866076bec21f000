"""The worker: admission control, queueing and deadlines in front of one engine."""
