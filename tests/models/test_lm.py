"""The pretrained-LM encoder: parity with PyTorch, weight loading, behaviour -> text, LoRA, end to end."""

import dataclasses
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from jmf.data.batches import dl_sequences  # noqa: E402
from jmf.data.interactions import from_columns  # noqa: E402
from jmf.data.split import make_split, partition_categories  # noqa: E402
from jmf.data.text import ALWAYS, PAD, TextTemplate, behaviour_texts, behaviour_tokens  # noqa: E402
from jmf.models.encoders.lm import Bert, BertSpec, LMEncoder, default_folder, load_bert, load_pretrained  # noqa: E402
from jmf.models.encoders.lm import jit_encode, load_tokenizer, pool  # noqa: E402
from jmf.models.encoders.lora import Frozen, LoRAParam, LoRASpec  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
SENTENCES = [
    "Toy Story (Animation), rated 5; Heat (Action), rated 3",
    "a",
    "The quick brown fox jumps over the lazy dog. " * 5,
    "category 7, rated 4; category 12, rated 2",
    "",
    "Naïve café — déjà vu! 123,456 (1995)",
    "GoldenEye (Action), rated 3; Four Rooms (Thriller), rated 2; Get Shorty (Comedy), rated 5",
]


@pytest.fixture(scope="module")
def minilm():
    return default_folder()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, minilm):
    """A random 2-layer BERT saved by transformers (safetensors), with MiniLM's tokenizer files."""
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128)
    model = BertModel(config)
    with torch.no_grad():  # non-trivial LayerNorm affine, so a weight/bias mix-up shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, folder / name)
    return folder


def _torch_states(folder, enc):
    import torch
    from transformers import AutoModel

    ref = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        return ref(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()


def _parity(folder):
    tok = load_tokenizer(folder)
    enc = tok(SENTENCES, padding=True, return_tensors="np")
    states, pooled = jit_encode(load_bert(folder))(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]))
    ours, ours_pooled = np.asarray(states), np.asarray(pooled)
    ref = _torch_states(folder, enc)
    mask = enc["attention_mask"].astype(bool)
    m = mask[..., None].astype(np.float32)
    ref_pooled = (ref * m).sum(1) / m.sum(1)
    ref_unit = ref_pooled / np.linalg.norm(ref_pooled, axis=1, keepdims=True)
    ours_unit = np.asarray(pool(jnp.asarray(ours), jnp.asarray(mask), normalize=True))
    return (np.abs(ours - ref)[mask].max(), np.abs(ours_pooled - ref_pooled).max(),
            np.abs(ours_unit - ref_unit).max(), enc)


def test_minilm_matches_pytorch_reference(minilm):
    """all-MiniLM-L6-v2: token states (valid positions) and pooled embeddings within 1e-5 of torch, float32."""
    states, pooled, unit, enc = _parity(minilm)
    print(f"MiniLM parity vs torch: token states {states:.2e}, mean-pooled {pooled:.2e}, normalised {unit:.2e}")
    assert enc["attention_mask"].sum(1).min() == 2 and enc["input_ids"].shape[1] > 40   # padding is exercised
    assert states <= 1e-5 and pooled <= 1e-5 and unit <= 1e-5


def test_any_bert_folder_matches_pytorch(tiny_folder):
    states, pooled, unit, _ = _parity(tiny_folder)
    assert states <= 1e-5 and pooled <= 1e-5 and unit <= 1e-5


def _rewrite(folder, dest, edit):
    from safetensors.numpy import load_file, save_file

    shutil.copytree(folder, dest)
    tensors = load_file(str(folder / "model.safetensors"))
    save_file(edit(tensors), str(dest / "model.safetensors"))
    return dest


def test_loading_names_a_missing_tensor(tiny_folder, tmp_path):
    name = "encoder.layer.1.attention.self.key.weight"
    bad = _rewrite(tiny_folder, tmp_path / "bad", lambda t: {k: v for k, v in t.items() if k != name})
    with pytest.raises(ValueError, match=f"missing tensor '{name}'"):
        load_bert(bad)


def test_loading_names_a_misshaped_tensor(tiny_folder, tmp_path):
    name = "encoder.layer.0.intermediate.dense.bias"
    bad = _rewrite(tiny_folder, tmp_path / "bad", lambda t: {**t, name: np.zeros(31, np.float32)})
    with pytest.raises(ValueError, match=rf"tensor '{name}' has shape \(31,\), expected \(32,\)"):
        load_bert(bad)


def test_loading_accepts_task_model_prefix(tiny_folder, tmp_path):
    """A BertFor* checkpoint stores ``bert.<name>`` plus head tensors; the encoder part is found."""
    prefixed = _rewrite(tiny_folder, tmp_path / "prefixed",
                        lambda t: {**{f"bert.{k}": v for k, v in t.items()}, "cls.bias": np.zeros(3, np.float32)})
    a, b = load_bert(tiny_folder), load_bert(prefixed)
    for (_, va), (_, vb) in zip(nnx.to_flat_state(nnx.state(a)), nnx.to_flat_state(nnx.state(b))):
        np.testing.assert_array_equal(va[...], vb[...])


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_bert(tmp_path)


# ----------------------------------------------------------------------------- behaviour -> text
@pytest.fixture(scope="module")
def text_split():
    """u1: DL history Toy Story (Comedy, 5, t=1), Casino (Action, 4, t=2), Heat (Action, 3, t=3) given
    out of time order; u2: one Action title; u3: no DL history.  Drama is the CF side."""
    rows = [("u1", "heat", 3, 30), ("u1", "toy", 5, 10), ("u1", "casino", 4, 20), ("u1", "se7en", 4, 5),
            ("u2", "heat", 2, 7), ("u2", "se7en", 5, 8), ("u3", "se7en", 3, 9)]
    user, item, value, ts = map(list, zip(*rows))
    cats = {"heat": "Action", "casino": "Action", "toy": "Comedy", "se7en": "Drama"}
    data = from_columns(user, item, value, timestamp=ts, item_category=cats,
                        category_names=["Action", "Comedy", "Drama"], source="text-test")
    titles = {"heat": "Heat", "casino": "Casino", "toy": "Toy Story", "se7en": "Se7en"}
    data = dataclasses.replace(data, item_titles=np.array([titles[i] for i in data.item_ids], dtype=object))
    split = make_split(data, partition_categories(data, cf_categories=["Drama"]), "ratio", test_ratio=0.5,
                       valid_ratio=0.0)
    return split, dl_sequences(split, max_len=5)


def test_behaviour_text_is_hand_checked(text_split):
    split, seqs = text_split
    texts = behaviour_texts(split, seqs, TextTemplate())
    assert texts == ["Toy Story (Comedy), rated 5; Casino (Action), rated 4; Heat (Action), rated 3",
                     "Heat (Action), rated 2", ""]
    custom = TextTemplate(item="{category}: {title} {rating}/5", separator=" | ", prefix="watched: ")
    assert behaviour_texts(split, seqs, custom)[1] == "watched: Action: Heat 2/5"


def test_numeric_category_names_read_as_words(text_split):
    split, seqs = text_split
    data = dataclasses.replace(split.data, category_names=("7", "12", "3"), item_titles=None)
    texts = behaviour_texts(dataclasses.replace(split, data=data), seqs, TextTemplate())
    assert texts[1] == "category 7, rated 2"


def test_tokens_truncate_from_the_oldest(text_split, minilm):
    split, seqs = text_split
    tok = load_tokenizer(minilm)
    full = behaviour_tokens(split, seqs, tok, TextTemplate(), max_tokens=40)
    # pieces tokenised apart == the joined text tokenised at once
    expected = tok("Toy Story (Comedy), rated 5; Casino (Action), rated 4; Heat (Action), rated 3")["input_ids"]
    assert full.tokens[0, :len(expected)].tolist() == expected
    assert (full.token_pos[0, len(expected):] == PAD).all()
    assert (full.tokens[0, len(expected):] == tok.pad_token_id).all()
    # 20 tokens leave room for Casino + Heat only: Toy Story (the oldest) is dropped whole
    short = behaviour_tokens(split, seqs, tok, TextTemplate(), max_tokens=20)
    kept = tok("Casino (Action), rated 4; Heat (Action), rated 3")["input_ids"]
    assert len(expected) > 20 >= len(kept)
    assert short.tokens[0, :len(kept)].tolist() == kept
    n_casino = len(tok("Casino (Action), rated 4;", add_special_tokens=False)["input_ids"])
    positions = short.token_pos[0, :len(kept)].tolist()
    assert positions == [ALWAYS] + [1] * n_casino + [2] * (len(kept) - 2 - n_casino) + [ALWAYS]
    # no history: [CLS] [SEP]
    assert short.tokens[2, :2].tolist() == [tok.cls_token_id, tok.sep_token_id] and (short.token_pos[2, 2:] == PAD).all()
    # cached: the same content gives the same object
    assert behaviour_tokens(split, seqs, tok, TextTemplate(), max_tokens=20) is short


def test_frozen_encoder_caches_the_pooled_text(text_split, tiny_folder):
    """``finetune=frozen`` hands the steps a pooled table equal to running the frozen BERT on the tokens."""
    split, seqs = text_split
    enc = LMEncoder(10, 2, 5, path=str(tiny_folder), finetune="frozen", max_tokens=24, rngs=nnx.Rngs(0))
    assert enc.input_keys == ("pooled",)
    cached = enc.user_inputs(split, seqs, batch_size=2)["pooled"]
    table = behaviour_tokens(split, seqs, load_tokenizer(tiny_folder), TextTemplate(), 24)
    graphdef, state = nnx.split(enc)
    run = jax.jit(lambda state, mask: nnx.merge(graphdef, state)(
        jnp.asarray(seqs.items), jnp.asarray(seqs.categories), mask, tokens=jnp.asarray(table.tokens),
        token_pos=jnp.asarray(table.token_pos)))
    live = run(state, jnp.asarray(seqs.mask))
    assert cached.shape == (3, 16)
    np.testing.assert_allclose(cached, np.asarray(live), atol=1e-5)
    # hiding a behaviour through the item mask hides its tokens (the live path of lora/full)
    hidden = run(state, jnp.asarray(seqs.mask).at[0, 2].set(False))
    assert not np.allclose(hidden[0], live[0]) and np.allclose(hidden[1:], live[1:], atol=1e-6)


# ----------------------------------------------------------------------------- LoRA
def test_lora_with_zero_b_equals_the_base_model(tiny_folder):
    tok = load_tokenizer(tiny_folder)
    enc = tok(SENTENCES, padding=True, return_tensors="np")
    ids, mask = jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"])
    base = load_bert(tiny_folder)
    adapted = load_bert(tiny_folder, trainable=False, lora=LoRASpec(rank=4, targets=("query", "value", "ffn_in")))
    np.testing.assert_array_equal(np.asarray(jit_encode(base)(ids, mask)[0]), np.asarray(jit_encode(adapted)(ids, mask)[0]))


def test_lora_step_changes_only_adapters_and_head(tiny_folder):
    """One optax step through the trainer's split: frozen weights are outside ``nnx.Param``."""
    enc = LMEncoder(10, 2, 5, path=str(tiny_folder), finetune="lora", lora={"rank": 2, "layers": [1]},
                    out_dim=8, max_tokens=16, rngs=nnx.Rngs(0))
    tok = load_tokenizer(tiny_folder)
    batch = tok(SENTENCES[:4], padding="max_length", max_length=16, truncation=True, return_tensors="np")
    tokens = jnp.asarray(batch["input_ids"])
    token_pos = jnp.where(jnp.asarray(batch["attention_mask"]) > 0, ALWAYS, PAD)
    items, mask = jnp.ones((4, 5), jnp.int32), jnp.ones((4, 5), bool)
    graphdef, params, rest = nnx.split(enc, nnx.Param, ...)
    kinds = {type(v).__name__ for path, v in nnx.to_flat_state(params) if path[0] == "bert"}
    assert kinds == {"LoRAParam"}
    adapted = {path[:4] for path, v in nnx.to_flat_state(params) if path[0] == "bert"}
    assert adapted == {("bert", "layers", 1, "query"), ("bert", "layers", 1, "value")}
    tx = optax.adam(1e-2)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        loss = lambda p: (nnx.merge(graphdef, p, rest)(items, items, mask, tokens, token_pos) ** 2).mean()  # noqa: E731
        return optax.apply_updates(params, tx.update(jax.grad(loss)(params), opt, params)[0])

    new = step(params, opt)
    changed = {path for (path, a), (_, b) in zip(nnx.to_flat_state(params), nnx.to_flat_state(new))
               if not np.array_equal(a[...], b[...])}
    # at step 0 only B moves (dL/dA = 0 while B = 0) and the head
    assert {p for p in changed if p[0] == "bert"} == {("bert", "layers", 1, t, "lora_b") for t in ("query", "value")}
    assert {p[0] for p in changed} == {"bert", "proj"}
    assert all(type(v) is Frozen for path, v in nnx.to_flat_state(rest) if path[0] == "bert")


def test_encoder_learning_rate_applies_to_the_encoder_only():
    from jmf.optim import part_optimizer

    class Net(nnx.Module):
        def __init__(self):
            self.encoder = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            self.head = nnx.Linear(2, 2, rngs=nnx.Rngs(1))

    params = nnx.state(Net(), nnx.Param)
    tx = part_optimizer(optax.sgd(1.0), optax.sgd(0.1), "encoder")
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(updates["encoder"]["kernel"][...].max()) == pytest.approx(-0.1)
    assert float(updates["head"]["kernel"][...].max()) == pytest.approx(-1.0)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("finetune", ["lora", pytest.param("full", marks=pytest.mark.slow)])
def test_jmf_with_lm_encoder_end_to_end(tiny_folder, finetune):
    """``model=jmf model/encoder=lm`` composed by Hydra, fitted on tiny synthetic cold start (a tiny BERT
    folder keeps it quick): pretrained weights stay put under LoRA and move under full fine-tuning."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from jmf.experiments import register_configs
    from jmf.evaluate.protocols import EvalConfig, evaluate_split
    from jmf.pipeline import build_split, load_data

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            "model=jmf", "model/encoder=lm", f"model.encoder.path={tiny_folder}", f"model.encoder.finetune={finetune}",
            "model.encoder.max_tokens=24", "model.encoder.lr=1e-3", "split=cold_start", "partition.k=4",
            "data.n_users=120", "data.n_items=80", "data.interactions_per_user=12", "model.dim=8",
            "model.batch_size=32", "model.items_per_user=8", "model.epochs=1", "model.pretrain_epochs=1"])
    split = build_split(load_data(cfg.data, 0), cfg.partition, cfg.split, 0)
    model = instantiate(cfg.model, _convert_="all")
    model.fit(split)
    ndcg = evaluate_split(model, split, "test", EvalConfig(ks=(10,)))["ndcg@10"]
    assert 0.0 <= ndcg <= 1.0
    assert model.seq["tokens"].shape == (split.n_users, 24)
    pretrained = {path: v[...] for path, v in nnx.to_flat_state(nnx.state(load_bert(tiny_folder)))}
    state = model.state.params if finetune == "full" else model.state.rest
    trained = {path[2:]: v[...] for path, v in nnx.to_flat_state(state) if path[:2] == ("encoder", "bert")}
    moved = [path for path in pretrained if not np.array_equal(pretrained[path], trained[path])]
    if finetune == "lora":
        assert moved == []
        b = [v[...] for path, v in nnx.to_flat_state(model.state.params) if path[-1] == "lora_b"]
        assert b and any(float(np.abs(x).max()) > 0 for x in b)
    else:
        assert len(moved) > len(pretrained) // 2


# ----------------------------------------------------------------------------- length-bucketed encoding
def test_bucket_lengths_and_plan():
    from jmf.models.encoders.length_buckets import bucket_lengths, plan_batches, text_lengths

    assert bucket_lengths(512) == (16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512)
    assert bucket_lengths(40, smallest=8) == (8, 16, 24, 32, 40) and bucket_lengths(10) == (10,)
    valid = np.arange(12)[None] < np.array([3, 12, 0, 7, 9, 1])[:, None]
    valid[3, 2] = False                                     # a hole inside a text does not shorten it
    lengths = text_lengths(valid)
    assert lengths.tolist() == [3, 12, 0, 7, 9, 1]
    plan = plan_batches(lengths, 4, (4, 8, 12))
    assert [(rows.tolist(), T) for rows, T in plan] == [([1, 4, 3, 0], 12), ([5, 2], 4)]


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_bucketed_encoding_equals_one_padded_batch(which, tiny_folder, minilm):
    """Sorted, bucket-padded batches give every text the encoding it gets padded to the table's width, in the
    input order, compiling once per bucket length used."""
    from jmf.models.encoders.length_buckets import encode_bucketed
    from jmf.models.encoders.lm import jit_pool

    folder = tiny_folder if which == "tiny" else minilm
    tok = load_tokenizer(folder)
    texts = SENTENCES[::-1] + SENTENCES[2:5]                            # 10 texts, 2-52 tokens, out of length order
    enc = tok(texts, padding="max_length", max_length=64, return_tensors="np")
    tokens, valid = enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(bool)
    bert = load_bert(folder)
    reference = np.asarray(jit_encode(bert)(jnp.asarray(tokens), jnp.asarray(valid))[1])     # [10, H], T = 64
    traces, pooled = [], jit_pool(bert)

    def counted(ids, mask):
        traces.append(ids.shape)
        return pooled(ids, mask)

    counted_jit = jax.jit(counted)
    bucketed = encode_bucketed(counted_jit, tokens, valid, batch_size=4, buckets=(8, 16, 32, 64))
    np.testing.assert_allclose(bucketed, reference, atol=1e-5, rtol=0)
    assert sorted(traces) == [(4, 8), (4, 16), (4, 64)]        # 3 batches: 18-52 tokens, 3-16, 2 and 2 (ragged)
    again = encode_bucketed(counted_jit, tokens, valid, batch_size=4, buckets=(8, 16, 32, 64))
    np.testing.assert_array_equal(again, bucketed)
    assert len(traces) == 3                                    # no new shapes: no new compiles


def test_attention_one_text_at_a_time_equals_the_whole_batch(monkeypatch):
    """Long texts' scores are computed one text at a time; the result is the batched computation's, padded keys
    (and a text with none valid) included, and both equal a softmax written out in numpy."""
    from jmf.models.encoders import lm

    rng = np.random.default_rng(3)
    q, k, v = (jnp.asarray(rng.standard_normal((3, 2, 6, 4)), jnp.float32) for _ in range(3))
    mask = jnp.asarray(np.arange(6)[None] < np.array([6, 2, 0])[:, None])
    whole = np.asarray(lm.attend(q, k, v, mask))
    monkeypatch.setattr(lm, "ATTEND_CHUNK_BYTES", 0)
    traced = jax.make_jaxpr(lm.attend)(q, k, v, mask)
    assert any(eqn.primitive.name == "scan" for eqn in traced.eqns)       # the per-text path was taken
    np.testing.assert_allclose(np.asarray(lm.attend(q, k, v, mask)), whole, rtol=1e-6, atol=1e-6)
    s = np.einsum("bhqd,bhkd->bhqk", np.asarray(q, np.float64), np.asarray(k, np.float64)) / 2.0
    s = np.where(np.asarray(mask)[:, None, None, :], s, -1e30)
    p = np.exp(s - s.max(-1, keepdims=True))
    expect = np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), np.asarray(v, np.float64))
    np.testing.assert_allclose(whole, expect, rtol=1e-5, atol=1e-5)
