"""Scoring terms: one small module per term, chosen once per ScorePolicy (terms.policy).

As kube-scheduler's noderesources picks `least_allocated` or `most_allocated` once in
getScoringStrategyFunction, score.py takes (strategy.py) `growth_terms(policy)` / `bonus_terms(policy)` (made once
per policy) for the terms a policy turns on, and MIG demands get mig.py's scorer instead; a term
with weight 0 is never called. Every term reads one `Move` (what the placement does to each row) and returns what
it adds, so adding a term is one module and one line in strategy.py.

- growth.py: FGD's fragmentation growth (frag.py's measure, with its balance weight) and the bucket.
- pairing.py, contention.py: milli added to the growth (score.py's docstring says why).
- consolidate.py, topology.py: bonuses added to the bucketed value.
- mig.py: MIG demands' own scorer; share_choice.py: which GPU of a node a share takes.
"""
