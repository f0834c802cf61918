"""How good a translation is: exact match, BLEU and chrF against the references, and whether
the output is mostly one token (a model that has learned only to repeat ",").
"""

from __future__ import annotations

from collections import Counter

from rnnkit.data.pairs import detokenize


def match_scores(hypotheses: list[list[str]], references: list[list[str]], level: str) -> dict:
    """Exact match (whole token sequence), corpus BLEU and chrF (sacrebleu, on joined text)."""
    import sacrebleu

    exact = sum(h == r for h, r in zip(hypotheses, references, strict=True))
    hyp_text = [detokenize(h, level) for h in hypotheses]
    ref_text = [detokenize(r, level) for r in references]
    bleu = sacrebleu.corpus_bleu(
        hyp_text, [ref_text], tokenize="char" if level == "char" else "13a"
    )
    chrf = sacrebleu.corpus_chrf(hyp_text, [ref_text])
    return {"exact": exact / max(len(references), 1), "bleu": bleu.score, "chrf": chrf.score}


def one_token_share(hypotheses: list[list[str]]) -> tuple[float, str]:
    """The share of all output tokens taken by the commonest one, and that token: near 1 when
    a model has learned only to repeat one token (",,,,,,")."""
    counts = Counter(token for h in hypotheses for token in h)
    if not counts:
        return 0.0, ""
    token, count = counts.most_common(1)[0]
    return count / sum(counts.values()), token


def one_token_warning(hypotheses: list[list[str]], shown: str = "output") -> str:
    """A warning when one token is over half of all output tokens (of at least 10), saying
    what to try; "" when the output is varied enough."""
    share, token = one_token_share(hypotheses)
    if share <= 0.5 or sum(map(len, hypotheses)) < 10:
        return ""
    return (
        f"warning: {share:.0%} of the {shown} is the token {token!r}: the model has not "
        "learned to translate yet; train longer or on more data, and decode with a beam "
        "(--beam 5) and a tighter repetition guard (--no-repeat-ngram 2)"
    )
