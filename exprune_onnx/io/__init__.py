"""Reading and writing models and data: files, feeds and input shapes, models over 2 GB."""
