"""The Gradio front end. It talks to the engine only through `pipelines.services.Services`."""
