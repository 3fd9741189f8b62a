"""Helpers shared by nodes and engines that are not model code."""
