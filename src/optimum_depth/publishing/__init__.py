"""Publishing a pruned model: saving checkpoints and records (:mod:`.saving`), reading them back (:mod:`.records`),
model cards (:mod:`.cards`, :mod:`.card_tables`), the importance plot (:mod:`.plotting`) and the Hub upload
(:mod:`.hub`)."""
