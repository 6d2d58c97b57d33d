"""Evaluation harness: log-likelihood and generation runners, per-instance records,
resume and multi-process sharding.  ``evaluate`` / ``evaluate_model`` are the API."""

from muscle.evaluation.runner import EvalResult, build_context, evaluate, evaluate_model

__all__ = ["EvalResult", "build_context", "evaluate", "evaluate_model"]
