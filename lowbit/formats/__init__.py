"""On-disk containers: lowbit's own safetensors layout (more layouts and GGUF come later)."""

from .safetensors import load, save

__all__ = ["save", "load"]
