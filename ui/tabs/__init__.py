"""One module per settings tab. Each `build` lays out its widgets inside the current gr.Blocks context
and returns them by name; wiring that stays inside the tab lives there too, the rest in gradio_app.py."""
