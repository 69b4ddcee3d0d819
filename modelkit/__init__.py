"""modelkit: build Ollama- and llama.cpp-compatible models with no daemon."""

__version__ = "0.1.0"
