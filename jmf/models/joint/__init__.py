"""``model=jmf``, the joint cross-category model, as a composition of parts (design.md#the-joint-model):

* :mod:`~jmf.models.joint.model` -- the core: CF tables, DL-side encoder, mapping head, on the engine;
* :mod:`~jmf.models.joint.net` -- the dense NNX module (encoder, head, interest layer, ``L_DL`` heads);
* :mod:`~jmf.models.joint.losses` -- ``L_CF + α L_DL + β L_map + γ L_transfer + δ L_interest``, one
  function per term;
* :mod:`~jmf.models.joint.step`, :mod:`~jmf.models.joint.plan` -- its pure train step and batch plan;
* :mod:`~jmf.models.joint.start` -- start-up variants (factors, item biases, the DL-side user offset);
* :mod:`~jmf.models.joint.terms` -- score terms added to the ranking after the fit;
* :mod:`~jmf.models.joint.transfer` -- ``model=jmf_map``: one JMF over every target category of
  ``split=category_holdout``, seen target by target.

``_target_: jmf.models.joint.JMF`` (``conf/model/jmf.yaml``).
"""

from jmf.models.joint.losses import LossWeights
from jmf.models.joint.model import JMF
from jmf.models.joint.net import centred_values
from jmf.models.joint.start import fit_offset_scale, o2_user_offsets
from jmf.models.joint.terms import (InterestReweighting, ItemNeighbourhood, cross_cooccurrence, neighbour_inputs,
                                    neighbour_term, o2_rows)
from jmf.models.joint.transfer import TransferJMF

__all__ = ["JMF", "TransferJMF", "LossWeights", "centred_values", "fit_offset_scale", "o2_user_offsets", "InterestReweighting",
           "ItemNeighbourhood", "cross_cooccurrence", "neighbour_inputs", "neighbour_term", "o2_rows"]
