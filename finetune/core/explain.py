"""Why a model answered: word attributions by occlusion, for every backend, and how faithful they are.

Occlusion needs nothing but the model's probabilities, so it works alike for ONNX Runtime and
PyTorch, and for a text read in windows: a word's weight is how much the probability of the
explained label falls when that word alone is removed from the text (negative: the word speaks
against the label). A text of more words than ``max_words`` is explained in ``max_words`` spans
of consecutive words (``unit_words`` words each), so the cost stays bounded: one model call per
span, batched.

Faithfulness (ERASER's comprehensiveness, DeYoung et al. 2020): removing a text's top share of
words by weight should lower the explained label's probability far more than removing as many
words drawn at random. :func:`comprehensiveness` measures both drops on one text.

numpy and ``re`` only: the slim ONNX install explains too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from finetune.core.contract import Predictor, decide, sigmoid, single_label_decisions, softmax
from finetune.core.errors import UserError

OCCLUSION = "occlusion"
INTEGRATED_GRADIENTS = "integrated-gradients"
METHODS = (OCCLUSION, INTEGRATED_GRADIENTS)
DEFAULT_MAX_WORDS = 200  # spans explained per text (one model call each)
NEGLIGIBLE = 0.05  # a weight below this share of a text's largest is not shown as a reason

# A word: letters and digits with inner apostrophes ("didn't"), or one mark of punctuation ("!" can drive an answer).
WORD = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]")

Probabilities = Callable[[list[str]], np.ndarray]  # texts -> one row of label probabilities per text
Span = tuple[int, int]  # characters [start, end) of a text


class ExplainError(UserError, ValueError):
    """A text or an option that cannot be explained; the message names the fix."""


@dataclass(frozen=True)
class Attribution:
    word: str  # the text's characters of this unit (a word, or a span of consecutive words)
    start: int
    end: int
    weight: float  # the explained label's probability lost when the unit is removed


@dataclass(frozen=True)
class Explanation:
    label: str  # the label whose probability the weights explain
    probability: float  # that label's probability for the whole text
    method: str
    words: int  # words in the text
    unit_words: int  # words per unit: 1, or more when the text has more words than max_words
    attributions: tuple[Attribution, ...]  # in text order

    def top(self, k: int) -> list[Attribution]:
        """The k units that most support the label, strongest first: positive weights that are not negligible
        beside the text's largest (NEGLIGIBLE), so a display marks what matters."""
        largest = max((abs(a.weight) for a in self.attributions), default=0.0)
        ranked = sorted(self.attributions, key=lambda a: a.weight, reverse=True)
        return [a for a in ranked[:k] if a.weight > 0 and a.weight >= NEGLIGIBLE * largest]

    def record(self) -> dict:
        """As the JSON answers give it: word, weight pairs in text order."""
        return {"label": self.label, "probability": self.probability, "method": self.method, "words": self.words,
                "unit_words": self.unit_words,
                "attributions": [{"word": a.word, "weight": a.weight, "start": a.start, "end": a.end}
                                 for a in self.attributions]}


def word_spans(text: str) -> list[Span]:
    """Where each word of ``text`` is (WORD)."""
    return [match.span() for match in WORD.finditer(text)]


def units(spans: Sequence[Span], max_words: int) -> tuple[list[Span], int]:
    """The spans explained and the words in each: every word, or consecutive groups of words when there are more
    than ``max_words`` (each unit from its first word's start to its last word's end)."""
    if max_words < 1:
        raise ExplainError(f"max_words must be at least 1, got {max_words}")
    per_unit = -(-len(spans) // max_words) if spans else 1
    grouped = [(spans[i][0], spans[min(i + per_unit, len(spans)) - 1][1]) for i in range(0, len(spans), per_unit)]
    return grouped, per_unit


def without(text: str, removed: Sequence[Span]) -> str:
    """``text`` with the ``removed`` spans cut out (the rest, spaces included, as it was)."""
    pieces, position = [], 0
    for start, end in sorted(removed):
        pieces.append(text[position:start])
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def check_explainable(text: str) -> list[Span]:
    """The words of a text that can be explained, or an ExplainError saying why not."""
    if not text.strip():
        raise ExplainError("the text is empty: there is nothing to explain")
    spans = word_spans(text)
    if not spans:
        raise ExplainError("the text has no words (letters, digits or punctuation) to weigh")
    return spans


def occlusion_probabilities(probabilities: Probabilities, text: str,
                            max_words: int) -> tuple[np.ndarray, list[Span], int]:
    """One batch of model calls: the probabilities of the text (row 0), then of the text without each unit; the
    units; words per unit. A text of one word is compared with the empty text."""
    chosen, per_unit = units(check_explainable(text), max_words)
    variants = [text] + [without(text, [unit]) for unit in chosen]
    return np.asarray(probabilities(variants), dtype=np.float64), chosen, per_unit


def occlusion(probabilities: Probabilities, text: str, targets: Sequence[int],
              max_words: int = DEFAULT_MAX_WORDS) -> tuple[np.ndarray, np.ndarray, list[Span], int]:
    """Occlusion weights of ``text``'s units for each target label: (weights [units, targets], the text's
    probabilities, the units, words per unit), from one batch (occlusion_probabilities)."""
    probs, chosen, per_unit = occlusion_probabilities(probabilities, text, max_words)
    return occlusion_weights(probs, targets), probs[0], chosen, per_unit


def occlusion_weights(probs: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """Each target's probability for the text (row 0) less its probability without each unit (the other rows)."""
    columns = list(targets)
    return probs[0, columns][None, :] - probs[1:, columns]


def explanations(text: str, labels: Sequence[str], targets: Sequence[int], weights: np.ndarray, full: np.ndarray,
                 chosen: Sequence[Span], per_unit: int, method: str) -> list[Explanation]:
    """One Explanation per target label from a method's weights ([units, targets])."""
    words = len(word_spans(text))
    return [Explanation(labels[target], float(full[target]), method, words, per_unit,
                        tuple(Attribution(text[start:end], start, end, float(weight))
                              for (start, end), weight in zip(chosen, weights[:, column], strict=True)))
            for column, target in enumerate(targets)]


def comprehensiveness(probabilities: Probabilities, text: str, target: int, explanation: Explanation,
                      share: float, draws: int, rng: np.random.Generator) -> tuple[float, float]:
    """The drop of ``target``'s probability when the top ``share`` of the explanation's units (by weight) are
    removed, and the mean drop over ``draws`` removals of as many units drawn at random."""
    spans = [(a.start, a.end) for a in explanation.attributions]
    k = max(1, round(share * len(spans)))
    order = np.argsort([-a.weight for a in explanation.attributions], kind="stable")
    removals = [[spans[i] for i in order[:k]]]
    removals += [[spans[i] for i in rng.choice(len(spans), size=k, replace=False)] for _ in range(draws)]
    probs = np.asarray(probabilities([without(text, removed) for removed in removals]), dtype=np.float64)
    drops = explanation.probability - probs[:, target]
    return float(drops[0]), float(drops[1:].mean())


def faithfulness(drops: Sequence[tuple[float, float]], method: str, share: float, draws: int) -> dict:
    """The declared figure over texts: mean drop for the top share, for a random share, and their ratio."""
    top, random = (float(np.mean(column)) for column in zip(*drops, strict=True))
    return {"method": method, "texts": len(drops), "top_share": share, "random_draws": draws,
            "mean_drop_top": round(top, 6), "mean_drop_random": round(random, 6),
            "ratio": round(top / random, 4) if random > 0 else None}


def marked(explanation: Explanation, text: str, k: int = 5) -> str:
    """The text with its top k supporting units in [[double brackets]] (predict's plain output)."""
    top = sorted((a.start, a.end) for a in explanation.top(k))
    pieces, position = [], 0
    for start, end in top:
        pieces += [text[position:start], "[[", text[start:end], "]]"]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def label_probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Label probabilities as answers read them: softmax, or a sigmoid per label for label sets."""
    return sigmoid(logits) if multi_label else softmax(logits)


def probabilities_of(predictor: Predictor) -> Probabilities:
    """A predictor's label probabilities (label_probabilities of its logits)."""
    def probabilities(texts: list[str]) -> np.ndarray:
        return label_probabilities(predictor.logits(list(texts)), predictor.info.multi_label)

    return probabilities


def explained_labels(probs: np.ndarray, predictor: Predictor) -> list[int]:
    """The labels an explanation is given for: the class answered (even when UNCERTAIN); for label sets each
    label given, or the most probable when none is."""
    info = predictor.info
    if not info.multi_label:
        return [int(single_label_decisions(probs[None, :], info.decision_threshold)[0])]
    given = np.flatnonzero(decide(probs, np.asarray(info.label_thresholds)))
    return [int(j) for j in given] or [int(np.argmax(probs))]


def explain(predictor: Predictor, texts: list[str], max_words: int = DEFAULT_MAX_WORDS,
            method: str = OCCLUSION) -> list[list[Explanation]]:
    """Per text, the words that drove its answer (explained_labels): occlusion with every backend; integrated
    gradients with a backend that offers them (PyTorch: an ``integrated_gradients(text, targets, max_words)``
    method giving the weights in occlusion's shape)."""
    if method not in METHODS:
        raise ExplainError(f"the explanation method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == INTEGRATED_GRADIENTS and not hasattr(predictor, "integrated_gradients"):
        raise ExplainError(f"the {predictor.backend} backend explains by {OCCLUSION} only; {method} needs the "
                           "PyTorch backend (--backend torch)")
    probabilities = probabilities_of(predictor)
    results = []
    for text in texts:
        if method == OCCLUSION:  # one batch: the text's own row chooses the labels explained
            probs, chosen, per_unit = occlusion_probabilities(probabilities, text, max_words)
            targets = explained_labels(probs[0], predictor)
            found = occlusion_weights(probs, targets), probs[0], chosen, per_unit
        else:
            targets = explained_labels(probabilities([text])[0], predictor)
            found = predictor.integrated_gradients(text, targets, max_words)
        results.append(explanations(text, predictor.labels, targets, *found, method))
    return results
