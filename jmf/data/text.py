"""A user's DL-side behaviour written as text, and its tokenised per-user table (design.md#the-dl-side).

Each behaviour of :func:`jmf.data.batches.dl_sequences` (the same last-``L`` window, oldest
first) is rendered with a template such as ``"{name} ({category}), rated {rating}"``; the
pieces are joined by a separator, oldest first.  Fields of a template:

* ``title``: the item's title where the dataset has them (MovieLens), else ``""``;
* ``category``: its category name (a purely numeric name ``7`` becomes ``category 7``, as in Ciao);
* ``name``: the title if there is one, else the category;
* ``rating``: the value (``4``, or ``3.5``); ``item``: the dataset's raw item id.

:func:`behaviour_tokens` tokenises each distinct piece once and assembles per user
``[CLS] prefix piece_k sep ... sep piece_newest [SEP]``, keeping the newest behaviours that fit
``max_tokens`` (whole behaviours are dropped from the oldest end).  Tokenising pieces apart is
exact for WordPiece: its pre-tokeniser splits on whitespace and punctuation, so the
concatenation equals the tokenisation of the joined text (a test checks this).  Every token
records which behaviour it belongs to (``token_pos``), so a model can hide behaviours (masked-item
prediction, augmented views) through the item mask without re-tokenising.  The table is cached
in memory by content, so seeds and modes over the same DL-side history share one tokenisation.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from jmf.data.batches import Sequences
from jmf.data.split import SplitData
from jmf.errors import DataError

ALWAYS = -1   # token_pos of [CLS], [SEP] and prefix tokens
PAD = -2      # token_pos of padding


@dataclass(frozen=True)
class TextTemplate:
    """How one behaviour and a history are written.

    Attributes:
      item: a ``str.format`` template over ``title, category, name, rating, item``.
      untitled: the template for an item without a title (datasets without titles, e.g. Ciao).
      separator: text between two behaviours.
      prefix: text before the first behaviour (e.g. ``"watched: "``).
    """

    item: str = "{name} ({category}), rated {rating}"
    untitled: str = "{category}, rated {rating}"
    separator: str = "; "
    prefix: str = ""


class TokenTable(NamedTuple):
    """Per-user token ids and, per token, the position of its behaviour in the ``[U, L]`` sequence."""

    tokens: np.ndarray     # [U, T] int32 (pads hold the tokenizer's pad id)
    token_pos: np.ndarray  # [U, T] int32: 0..L-1 behaviour, ALWAYS (-1) special/prefix, PAD (-2)


def _category_name(name: str) -> str:
    return f"category {name}" if name.isdigit() else name


def _rating(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def behaviour_pieces(split: SplitData, seqs: Sequences, template: TextTemplate) -> list[list[str]]:
    """Per user, the rendered behaviours of ``seqs``, oldest first (empty list: no DL-side history)."""
    data = split.data
    titles = data.item_titles
    pieces: dict[tuple[int, int, float], str] = {}
    out: list[list[str]] = []
    for u in range(seqs.items.shape[0]):
        row = []
        for local, cat, value in zip(seqs.items[u][seqs.mask[u]], seqs.categories[u][seqs.mask[u]],
                                     seqs.values[u][seqs.mask[u]]):
            key = (int(local), int(cat), float(value))
            text = pieces.get(key)
            if text is None:
                item = int(split.dl_items[local - 1])
                category = _category_name(data.category_names[int(split.partition.dl_categories[cat - 1])])
                title = "" if titles is None else str(titles[item]).strip()
                text = (template.item if title else template.untitled).format(title=title, category=category, name=title or category,
                                            rating=_rating(value), item=data.item_ids[item])
                pieces[key] = text
            row.append(text)
        out.append(row)
    return out


def behaviour_texts(split: SplitData, seqs: Sequences, template: TextTemplate) -> list[str]:
    """Per user, the whole (untruncated) history text: ``prefix + piece_1 + sep + ... + piece_n``."""
    return [template.prefix + template.separator.join(row) for row in behaviour_pieces(split, seqs, template)]


_CACHE: OrderedDict[str, TokenTable] = OrderedDict()
_CACHE_SIZE = 8


def behaviour_tokens(split: SplitData, seqs: Sequences, tokenizer, template: TextTemplate,
                     max_tokens: int, cache_key: str = "") -> TokenTable:
    """Tokenise every user's history into a fixed ``[U, max_tokens]`` table, truncated from the oldest.

    Args:
      tokenizer: a Hugging Face tokenizer (``cls_token_id``, ``sep_token_id``, ``pad_token_id``).
      max_tokens: ``T``, special tokens included.
      cache_key: names the tokenizer (its folder) in the in-memory cache key.
    """
    key = _fingerprint(split, seqs, template, max_tokens, cache_key or repr(type(tokenizer)))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    pieces = behaviour_pieces(split, seqs, template)
    distinct = sorted({p for row in pieces for p in row})

    def encode(texts):
        return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []

    ids = dict(zip(distinct, encode(distinct)))
    sep = encode([template.separator])[0]
    prefix = encode([template.prefix])[0] if template.prefix else []
    budget = max_tokens - 2 - len(prefix)
    if budget < 1:
        raise DataError(f"model.encoder.max_tokens: {max_tokens} leaves no room after [CLS], [SEP] and the prefix")
    U = len(pieces)
    tokens = np.full((U, max_tokens), tokenizer.pad_token_id, np.int32)
    token_pos = np.full((U, max_tokens), PAD, np.int32)
    positions = [np.flatnonzero(seqs.mask[u]) for u in range(U)]
    for u, row in enumerate(pieces):
        kept: list[tuple[int, list[int]]] = []   # (sequence position, token ids incl. trailing sep), newest first
        used = 0
        for j in range(len(row) - 1, -1, -1):
            piece = ids[row[j]] + (sep if kept else [])
            if used + len(piece) > budget:
                if not kept:                      # the newest behaviour alone is too long: keep its head
                    kept.append((int(positions[u][j]), piece[:budget]))
                break
            kept.append((int(positions[u][j]), piece))
            used += len(piece)
        seq_ids = [tokenizer.cls_token_id] + prefix
        seq_pos = [ALWAYS] * len(seq_ids)
        for pos, piece in reversed(kept):
            seq_ids += piece
            seq_pos += [pos] * len(piece)
        seq_ids.append(tokenizer.sep_token_id)
        seq_pos.append(ALWAYS)
        tokens[u, :len(seq_ids)] = seq_ids
        token_pos[u, :len(seq_pos)] = seq_pos
    table = TokenTable(tokens, token_pos)
    _CACHE[key] = table
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return table


def _fingerprint(split: SplitData, seqs: Sequences, template: TextTemplate, max_tokens: int, tok: str) -> str:
    h = hashlib.sha1()
    for arr in (seqs.items, seqs.categories, seqs.values, split.dl_items, split.partition.dl_categories):
        h.update(np.ascontiguousarray(arr).tobytes())
        h.update(str(arr.shape).encode())
    titles = split.data.item_titles
    h.update(repr((split.data.name, split.data.category_names, template, max_tokens, tok,
                   None if titles is None else hashlib.sha1("\x00".join(map(str, titles)).encode()).hexdigest()))
             .encode())
    return h.hexdigest()
