"""Running streams through a converted network and judging what it did: the one runner (:mod:`.stream`), agreement
with the original (:mod:`.metrics`), per-frame video evaluation (:mod:`.video`), text reports (:mod:`.report`),
figures (:mod:`.plots`) and wall-clock timing against dense PyTorch (:mod:`.timing`)."""
