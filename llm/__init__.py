"""A real local LLM for the agent: packaged models and an Ollama-API server over llama.cpp."""
