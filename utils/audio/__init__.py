"""Audio post-processing: applying edit tags over segments, joining chunks."""
