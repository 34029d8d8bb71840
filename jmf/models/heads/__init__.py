"""Mapping heads ``h_u -> P̂_u`` (the cross-category bridge, DESIGN 2.3)."""
