"""Leaf helpers shared by every stage (no imports of other sub-packages)."""
