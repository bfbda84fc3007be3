"""DLP-LoRA: sentence-level routing and per-row LoRA fusion."""
