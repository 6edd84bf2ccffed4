"""The compiler proper: canonicalise the graph, match the rules, rewrite (pipeline.py is the order)."""
