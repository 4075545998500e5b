"""Making images faster on a CPU: the compiled UNet (with its persistent cache), step caching, time estimates."""
