"""Test helpers: tiny and full-size random models, single-file checkpoint export."""
