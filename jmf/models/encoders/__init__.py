"""DL-side encoders ``h_u = f_θ(x_u)`` over a user's padded O2 sequence (design.md#the-dl-side)."""
