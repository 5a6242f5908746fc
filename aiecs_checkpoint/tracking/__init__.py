"""What graph runs record besides checkpoints: task records, sessions, messages."""
