"""Policy learning: from logged, randomized decisions to a decision rule judged by profit.

The engine's decision is learned from the reward it is judged by: the realized profit of
a logged decision in its outcome window (margin x order value at the offer's seller -
discount cost of its redemptions - send cost). The steps, each a module:

- :mod:`~recsys.learning.decisions` — the logged decisions, the actions each could have
  taken (its *options*), their outcomes, and folds by buyer;
- :mod:`~recsys.learning.matrix` — numeric matrices from feature frames, robust to
  columns without values;
- :mod:`~recsys.learning.scores` — cross-fitted outcome models and doubly robust scores
  of every action of every decision;
- :mod:`~recsys.learning.effects` — effect models on those scores (one effect per kind of
  offer, a shrunken segment table, a DR-learner), each with its uncertainty;
- :mod:`~recsys.learning.values` — per (buyer, offer): expected incremental profit, its
  standard error, and the conservative decision score;
- :mod:`~recsys.learning.selection` — candidate policies valued on the same folds, the
  simplest within one standard error of the best shipped;
- :mod:`~recsys.learning.learner` — :class:`PolicyLearner`, which chains them.
"""
