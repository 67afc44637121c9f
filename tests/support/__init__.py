"""Helpers for tests that run real processes against real services."""
