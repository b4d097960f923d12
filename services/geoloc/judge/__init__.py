"""The judge: a multimodal language model asked through an OpenAI-compatible chat-completions endpoint."""
