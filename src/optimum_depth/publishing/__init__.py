"""Publishing a pruned model: saving checkpoints and records (:mod:`.saving`: staged, all-or-nothing moves in
:mod:`.replacement`, only the library's own files ever removed, see :mod:`.ownership`), reading them back
(:mod:`.records`), model cards (:mod:`.cards`, :mod:`.card_tables`), the importance plot (:mod:`.plotting`) and the
Hub upload (:mod:`.hub`)."""
