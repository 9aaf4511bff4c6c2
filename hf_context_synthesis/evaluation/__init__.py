"""Evaluation: LongBench v1/v2 runners and scoring, needles, context dependence."""
