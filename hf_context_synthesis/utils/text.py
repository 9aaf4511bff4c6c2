"""Text normalisation shared by the quality filters and LongBench's scoring (LongBench's own rule)."""

from __future__ import annotations

import re
import string

__all__ = ["normalize_answer"]

DELETE_PUNCTUATION = str.maketrans("", "", string.punctuation)


ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lowercase, remove punctuation, remove articles (a/an/the) and collapse whitespace."""
    text = s.lower()
    text = text.translate(DELETE_PUNCTUATION)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())
