"""A tiny model built offline for tests and single-GPU trials: the project's own tokenizer
(tokenizer, for the Dynamo mocker), random-weight Hugging Face checkpoints (model) written with
numpy alone (safetensors_lite). Imports nothing of the orchestrator beyond itself."""
