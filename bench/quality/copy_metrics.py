"""Score copy detection as DISC21 does (micro-AP, recall at 90 % precision) plus verdict counts.

Inputs are a method's similarity matrix (queries x references, higher = more alike) and the
ground truth: each query's source reference index, or -1 for a distractor query (an edited
photo that is in no reference set).

- Predictions: each query's top-k references with their scores, pooled over all queries,
  distractors included (DISC21's matching track, k = 10 here).
- micro-AP: the predictions sorted by descending score; a prediction is correct iff its
  reference is the query's source. Precision and recall at every rank, recall's denominator
  being the number of queries that have a source; AP = sum over ranks of (recall step x
  precision), the rectangle rule of DISC21's own `average_precision`. Equal scores are ordered
  with the wrong predictions first, as DISC21 does, so a coarse score (a 64-bit hash distance)
  gains nothing from ties.
- Recall at 90 % precision: the highest recall at any rank where precision is still >= 0.9.
- Verdicts: each query's top-1 reference and whether the method's own near-duplicate test
  (at the product's thresholds) calls that pair a copy. Precision = correct calls / all calls
  (calls on distractor queries and calls naming the wrong reference are both wrong); recall =
  correct calls / queries that have a source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float64]
BoolMatrix = npt.NDArray[np.bool_]
IntVector = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Ranking:
    """micro-AP and recall at the target precision of one method."""

    micro_ap: float
    recall_at_precision: float
    predictions: int


@dataclass(frozen=True)
class Calls:
    """How a yes/no test fared on the queries' top-1 pairs, and on all pairs."""

    called: int  # top-1 pairs called (copy, or exact) by the test
    correct: int  # of those, pairs whose reference is the query's source
    positives: int  # queries the test should find (the recall denominator)
    wrong_pairs: int  # every (query, reference) pair called that is not query and source

    @property
    def precision(self) -> float:
        return self.correct / self.called if self.called else float("nan")

    @property
    def recall(self) -> float:
        return self.correct / self.positives if self.positives else float("nan")


def top_k(similarity: FloatMatrix, k: int) -> tuple[IntVector, IntVector, FloatMatrix]:
    """(query index, reference index, score) of each query's k best references. The order
    among equal scores is by reference index, so the result is the same on every run."""
    k = min(k, similarity.shape[1])
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    queries = np.repeat(np.arange(similarity.shape[0]), k)
    references = order.ravel()
    return queries, references, similarity[queries, references]


def micro_ap(
    similarity: FloatMatrix, source: IntVector, k: int = 10, target_precision: float = 0.9
) -> Ranking:
    """DISC21's micro-AP over the pooled top-k predictions, and recall at `target_precision`."""
    queries, references, scores = top_k(similarity, k)
    correct = references == source[queries]
    # Descending score; among equal scores the wrong predictions first (DISC21's lexsort).
    order = np.lexsort((~correct, scores))[::-1]
    hits = np.cumsum(correct[order])
    positives = int(np.count_nonzero(source >= 0))
    precisions = hits / np.arange(1, len(order) + 1)
    recalls = hits / positives
    steps = np.diff(np.concatenate([[0.0], recalls]))
    ap = float(np.sum(steps * precisions))
    reached = recalls[precisions >= target_precision]
    return Ranking(ap, float(reached.max()) if reached.size else 0.0, len(order))


def calls(
    similarity: FloatMatrix, called: BoolMatrix, source: IntVector, positive: npt.NDArray[np.bool_]
) -> Calls:
    """Precision and recall of the test `called` (queries x references) on each query's top-1
    reference (by `similarity`); `positive` marks the queries the test should find."""
    best = np.argmax(similarity, axis=1)  # the first of equal maxima: deterministic
    rows = np.arange(similarity.shape[0])
    top_called = called[rows, best]
    right = best == source
    truth = np.zeros_like(called)
    has_source = source >= 0
    truth[rows[has_source], source[has_source]] = True
    return Calls(
        called=int(np.count_nonzero(top_called)),
        correct=int(np.count_nonzero(top_called & right & positive)),
        positives=int(np.count_nonzero(positive)),
        wrong_pairs=int(np.count_nonzero(called & ~truth)),
    )
