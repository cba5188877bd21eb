"""Small helpers shared across neurofm: argument checks and logging."""
