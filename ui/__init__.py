"""The Gradio page, one module per tab; ``app.py`` composes them."""
