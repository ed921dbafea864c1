"""The GPU inference worker: RunPod Serverless handler and self-hosted job server (issue 12)."""
