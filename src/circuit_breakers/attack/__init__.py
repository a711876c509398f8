"""Adaptive (optimisation-based) attacks on a model with or without its circuit-breaker adapter.

Static attacks (prefills, jailbreak templates: :mod:`circuit_breakers.eval.attacks`) test a
fixed set of strings; an adaptive attack searches, per prompt, for the input that makes the
model start the answer an attacker wants. Two optimisers share one objective, the cross-entropy
of a per-prompt target string after the prompt:

* ``embedding``: a continuous suffix of input embeddings, signed gradient descent, optionally
  held inside an L2 ball around its start (:func:`.optim.embedding_attack`);
* ``gcg``: a token suffix, greedy coordinate gradient (:func:`.optim.gcg_attack`).

Modules: :mod:`.prompts` (where the suffix goes, the target text), :mod:`.optim` (the
objective and the two optimisers), :mod:`.sampling` (answers from a suffix), :mod:`.run`
(a suite in, ``results.json`` / ``samples.jsonl`` / ``loss_curves.json`` out), :mod:`.cli`
(``cb attack``) and :mod:`.report` (the section ``cb report`` shows).
"""
