"""Choosing what to rewrite and how far: layer statistics, the search, the objectives, the risk bound."""
