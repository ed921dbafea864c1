"""The one image pipeline: pre (read, decode, preprocess), core (batched inference), post."""
