"""Models on disk to models in memory: find, identify, load (offline configs, hub), cache, VAE overrides."""
