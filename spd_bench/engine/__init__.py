"""The one engine every method runs on: extraction, projection, generation, fine-tuning, pipeline."""
