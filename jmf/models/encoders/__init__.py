"""DL-side encoders ``h_u = f_θ(x_u)`` over a user's padded DL-side sequence (design.md#the-dl-side)."""
