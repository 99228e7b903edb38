"""segvn: semantic segmentation of street-scene videos (see README.md)."""
