"""Prompt text to conditioning: syntax, styles, wildcards, embeddings, prompt editing, the compel encoder."""
