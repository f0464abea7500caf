"""lalmjax: Whisper encoder -> audio-token compression -> projector -> Qwen2 (+LoRA)."""

__version__ = "0.1.0"
