"""Pixel work before and after the sampler, testable without a model: checking and storing input images,
A1111's resize modes, and overlapping tiles with blended seams."""
