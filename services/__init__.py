"""The work itself, free of Flask: OpenAI, prompts, images, generation, batches, webhooks, sandbox."""
