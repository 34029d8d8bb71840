"""Checks shared by the test files of the dual-domain graph models (DisenCDR, CDRIB): same signatures, same fit."""

from __future__ import annotations

import numpy as np
import pytest


def crash_then_resume(cls, small: dict, split, ref, ctx, monkeypatch, caplog) -> None:
    """A fit of ``cls(**small)`` dies in its second validation; the same fit (same run directory, ``ctx()``) resumes
    from the first checkpoint and ends bit-identical to ``ref``, the uninterrupted fit."""
    real, calls = cls._validate, []

    def crash_on_second(self, state):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(self, state)

    monkeypatch.setattr(cls, "_validate", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        cls(**small).fit(split, ctx())
    monkeypatch.setattr(cls, "_validate", real)
    resumed = cls(**small)
    with caplog.at_level("INFO", logger="jmf"):
        resumed.fit(split, ctx())
    assert "resumed from step" in caplog.text
    np.testing.assert_array_equal(np.asarray(resumed.user_table), np.asarray(ref.user_table))
    np.testing.assert_array_equal(np.asarray(resumed.item_table), np.asarray(ref.item_table))


def four_devices_match_one(cls, small: dict, split, one, ctx, evaluate) -> None:
    """The fit on 4 forced CPU devices (``ctx(devices=4)``) matches ``one``, the 1-device fit: validation NDCG@10
    within 1e-4, tables within 1e-3 (``evaluate(model) -> ndcg@10``)."""
    four = cls(**small)
    four.fit(split, ctx(devices=4))
    assert four.engine.n_devices == 4
    a, b = evaluate(one), evaluate(four)
    assert abs(a - b) < 1e-4, (a, b)
    np.testing.assert_allclose(np.asarray(four.user_table), np.asarray(one.user_table), atol=1e-3)
