"""Scoring: text normalisation and error rates."""
