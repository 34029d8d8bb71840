"""DL-side encoders ``h_u = f_θ(x_u)`` over a user's padded O2 sequence (DESIGN 2.2)."""
