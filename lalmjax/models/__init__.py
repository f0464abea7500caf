"""Flax Linen model definitions (Whisper encoder, Qwen2 LM, LoRA, the assembled LALM)."""
