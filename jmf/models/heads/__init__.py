"""Mapping heads ``h_u -> P̂_u`` (the cross-category bridge, design.md#the-mapping-head)."""
