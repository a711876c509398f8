"""``cb report``: an HTML page of a ``cb demo`` run folder (:mod:`.run_data` reads it,
:mod:`.plots` draws, :mod:`.html` writes the page)."""
