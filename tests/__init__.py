"""Test suite of Easel."""
