"""Cross-domain baselines on the same splits as the joint model (design.md#model-families).

O1 (the CF side) is the target domain and O2 (the DL side) the source: cold-start users have
no O1 training rows but an O2 history.

* :mod:`jmf.models.cdr.cmf`: collective MF, one user factor shared by both sides (``model=cmf``).
* :mod:`jmf.models.cdr.emcdr`: per-side MF, then an MLP ``f(P_s) -> P_t`` fitted on the overlapping
  users (``model=emcdr``).
* :mod:`jmf.models.cdr.ptupcdr`: per-side MF, then a meta network that writes a personalised
  bridge matrix from the user's O2 history, trained on the target loss (``model=ptupcdr``).
"""
