"""Measuring models: outputs side by side, FLOPs, the ops' own counters, time and peak memory."""
