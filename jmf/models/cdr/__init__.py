"""Cross-domain baselines on the same splits as the joint model (design.md#model-families).

The CF side is the target domain and the DL side the source: cold-start users have
no CF-side training rows but a DL-side history.

* :mod:`jmf.models.cdr.cmf`: collective MF, one user factor shared by both sides (``model=cmf``).
* :mod:`jmf.models.cdr.emcdr`: per-side MF, then an MLP ``f(P_s) -> P_t`` fitted on the overlapping
  users (``model=emcdr``).
* :mod:`jmf.models.cdr.ptupcdr`: per-side MF, then a meta network that writes a personalised
  bridge matrix from the user's DL-side history, trained on the target loss (``model=ptupcdr``).
"""
