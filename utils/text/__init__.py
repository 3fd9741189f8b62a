"""Pure-Python text helpers: inline edit tags, sentence segmentation."""
