"""Training: models (find, load, save), batched inference with PyTorch, and the Trainer set-up (trainer)."""
