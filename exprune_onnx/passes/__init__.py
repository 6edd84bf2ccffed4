"""Passes that run after the early-exit rewrites: layers that read zeros skip them (sparse inputs)."""
