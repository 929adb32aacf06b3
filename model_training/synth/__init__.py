"""Photorealistic motion-blur synthesis on sharp photos (paper section 3.2)."""
