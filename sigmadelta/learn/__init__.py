"""Learning what a converted network needs: its scales (:mod:`.optimize`, the paper's section 4, with its
minibatches in :mod:`.minibatches`; :mod:`.calibrate`, the paper's protocol on a clip, cached), its delta scheme's
parameter per quantizer (:mod:`.scheme_search`), the band spread across layers by output sensitivity
(:mod:`.allocation`), and its weights for the Sigma-Delta cost (:mod:`.finetune`, with the objective's parts in
:mod:`.objective`)."""
