"""Pieces both servers (worker and gateway) share: streaming responses, errors, metrics."""
