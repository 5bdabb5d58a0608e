"""Every registered model: builds, trains a step, ignores padding, rebuilds from its checkpoint config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avmatch import losses
from avmatch.models import build_model, capabilities, list_models
from avmatch.models.base import parameter_table

VIDEO_DIM, AUDIO_DIM = 24, 12
NAMES = [e.name for e in list_models() if e.builder.__module__.startswith("avmatch.")]  # not models tests register
# every model as built by default, and the options that switch on another path through a model
BUILDS = [(n, {}) for n in NAMES] + [("sync", {"video_maps": [4, 1, 4]}),  # one 4x4 map from column 4
                                      ("sync", {"kernel": 1, "max_lag": 0})]  # the "seconds" recipe's: row by row
BUILD_IDS = [n + "".join(f"-{k}" for k in o) for n, o in BUILDS]


def _batch(n: int, dim: int, lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded (n, max(lengths), dim) random clips, padding zero, and their lengths."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths[:n])
    x = torch.randn(n, int(lens.max()), dim, generator=g)
    x[torch.arange(x.shape[1])[None, :] >= lens[:, None]] = 0.0
    return x, lens


def _with_garbage(x: torch.Tensor, lengths: torch.Tensor, extra: int, seed: int) -> torch.Tensor:
    """The same clips with large random values in every padding row, plus ``extra`` more rows."""
    g = torch.Generator().manual_seed(seed)
    out = 50 * torch.randn(x.shape[0], x.shape[1] + extra, x.shape[2], generator=g)
    real = torch.arange(out.shape[1])[None, :] < lengths[:, None]
    out[real] = torch.nn.functional.pad(x, (0, 0, 0, extra))[real]
    return out


def _loss(model, v, v_len, a, a_len) -> torch.Tensor:
    """The objective the training loop uses for this model (its entry in ``losses.LOSSES``)."""
    ev, ea = model.encode_video(v, v_len), model.encode_audio(a, a_len)
    batch = losses.Batch(shifts=[0] * v.shape[0], negatives=1, rng=np.random.default_rng(0))
    return sum(losses.objective(model.loss).terms(model, ev, ea, v_len, a_len, batch).values())


V_LENS, A_LENS = [9, 5, 7, 3, 8], [6, 9, 4, 7, 5]  # lengths differ within a batch and between modalities


@pytest.mark.parametrize("name,options", BUILDS, ids=BUILD_IDS)
def test_model_trains_a_step_and_scores_consistently(name, options):
    torch.manual_seed(0)
    model = build_model(name, VIDEO_DIM, AUDIO_DIM, **options)
    assert model.loss in losses.LOSSES
    v, v_len = _batch(4, VIDEO_DIM, V_LENS, 1)
    a, a_len = _batch(4, AUDIO_DIM, A_LENS, 2)
    model.train()
    loss = _loss(model, v, v_len, a, a_len)
    assert torch.isfinite(loss)
    loss.backward()
    params = dict(model.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
    assert sum(float(p.grad.abs().sum()) for p in params.values()) > 0

    model.eval()
    v, v_len = _batch(5, VIDEO_DIM, V_LENS, 3)
    a, a_len = _batch(4, AUDIO_DIM, A_LENS, 4)
    with torch.no_grad():
        ev, ea = model.encode_video(v, v_len), model.encode_audio(a, a_len)
        matrix = model.score_matrix(ev, ea, v_len, a_len)
        pairs = model.score_pairs(ev[:4], ea, v_len[:4], a_len)
    assert matrix.shape == (5, 4) and pairs.shape == (4,)
    assert torch.isfinite(matrix).all()
    torch.testing.assert_close(matrix.diagonal(), pairs, rtol=1e-4, atol=1e-4)
    assert matrix.std() > 0  # scores depend on the pair


@pytest.mark.parametrize("name,options", BUILDS, ids=BUILD_IDS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_padding_never_changes_a_result(name, options, mode):
    torch.manual_seed(0)
    model = build_model(name, VIDEO_DIM, AUDIO_DIM, dropout=0.0, **options)  # train mode then is deterministic
    model.train(mode == "train")
    v, v_len = _batch(5, VIDEO_DIM, V_LENS, 5)
    a, a_len = _batch(5, AUDIO_DIM, A_LENS, 6)
    v_junk, a_junk = _with_garbage(v, v_len, 3, 7), _with_garbage(a, a_len, 2, 8)
    with torch.no_grad():
        ev, ea = model.encode_video(v, v_len), model.encode_audio(a, a_len)
        ev_j, ea_j = model.encode_video(v_junk, v_len), model.encode_audio(a_junk, a_len)
        if ev.dim() == 3:  # sequence encoders: compare the real rows
            ev_j, ea_j = ev_j[:, : ev.shape[1]], ea_j[:, : ea.shape[1]]
            real = torch.arange(ev.shape[1])[None, :] < v_len[:, None]
            assert (ev[~real] == 0).all()
        torch.testing.assert_close(ev_j, ev, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ea_j, ea, rtol=1e-4, atol=1e-5)
        scores = model.score_matrix(model.encode_video(v, v_len), model.encode_audio(a, a_len), v_len, a_len)
        scores_j = model.score_matrix(model.encode_video(v_junk, v_len), model.encode_audio(a_junk, a_len),
                                      v_len, a_len)
    torch.testing.assert_close(scores_j, scores, rtol=1e-4, atol=1e-4)


def test_padding_check_can_fail():
    """The garbage rows are real garbage: an unmasked mean over them would differ."""
    v, v_len = _batch(5, VIDEO_DIM, V_LENS, 5)
    assert not torch.allclose(_with_garbage(v, v_len, 3, 7).mean(1), v.mean(1), atol=1e-3)


def test_lstm_cnn_has_the_reports_parameter_counts():
    model = build_model("lstm-cnn", 1024, 128)
    table = dict(parameter_table(model))
    assert table == {
        "video.lstm1": 279_040, "video.lstm2": 33_280, "audio.lstm1": 49_664, "audio.lstm2": 33_280,
        "layers.0.conv": 104, "layers.0.norm": 8, "layers.1.conv": 808, "layers.1.norm": 16,
        "layers.2.conv": 3_216, "layers.2.norm": 32, "head": 65,
    }
    assert 4 * (64 * 1024 + 64 * 64 + 64 + 64) == 279_040


@pytest.mark.parametrize("name", NAMES)
def test_parameter_table_covers_every_parameter(name):
    model = build_model(name, VIDEO_DIM, AUDIO_DIM)
    table = parameter_table(model)
    names = [n for n, _ in table]
    assert len(names) == len(set(names)) and all(c > 0 for _, c in table)
    assert sum(c for _, c in table) == sum(p.numel() for p in model.parameters())
    if capabilities(model).embedding:
        assert "logit_scale" in names


OPTIONS = {"dual": {"embed_dim": 32, "hidden": 48}, "lstm-cnn": {"interleave": False}, "cnn": {"channels": [16, 24]},
           "gru": {"layers": 1, "pool": "last"}}


@pytest.mark.parametrize("name", NAMES)
def test_state_survives_a_rebuild_from_name_and_config(name):
    torch.manual_seed(0)
    model = build_model(name, VIDEO_DIM, AUDIO_DIM, **OPTIONS.get(name, {}))
    v, v_len = _batch(3, VIDEO_DIM, V_LENS, 9)
    a, a_len = _batch(3, AUDIO_DIM, A_LENS, 10)
    model.train()
    with torch.no_grad():  # move batch-norm running statistics off their initial values
        model.encode_video(v, v_len), model.encode_audio(a, a_len)
    config = json.loads(json.dumps(model.config))  # checkpoints store plain values
    dims = config.pop("video_dim"), config.pop("audio_dim")
    torch.manual_seed(1)  # a different initialisation, so only the loaded state can make them agree
    rebuilt = build_model(model.name, *dims, **config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        want = model.score_matrix(model.encode_video(v, v_len), model.encode_audio(a, a_len), v_len, a_len)
        got = rebuilt.score_matrix(rebuilt.encode_video(v, v_len), rebuilt.encode_audio(a, a_len), v_len, a_len)
    torch.testing.assert_close(got, want)


def test_embedding_models_return_unit_vectors():
    model = build_model("dual", VIDEO_DIM, AUDIO_DIM, embed_dim=16).eval()
    v, v_len = _batch(4, VIDEO_DIM, V_LENS, 11)
    with torch.no_grad():
        ev = model.encode_video(v, v_len)
    assert ev.shape == (4, 16)
    torch.testing.assert_close(ev.norm(dim=-1), torch.ones(4))


def _synthetic_pairs(n: int, g: torch.Generator, project: torch.Tensor):
    """Video clips of 5-10 rows; each audio is a fixed linear projection of its video plus noise."""
    lens = torch.randint(5, 11, (n,), generator=g)
    v = torch.randn(n, 10, VIDEO_DIM, generator=g)
    v[torch.arange(10)[None, :] >= lens[:, None]] = 0.0
    a = v @ project + 0.5 * torch.randn(n, 10, AUDIO_DIM, generator=g)
    a[torch.arange(10)[None, :] >= lens[:, None]] = 0.0
    return v, a, lens


def test_dual_learns_a_synthetic_correspondence():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: extra threads only wait on each other on a busy machine
    try:
        top1 = _train_dual_on_synthetic_pairs(steps=150)
    finally:
        torch.set_num_threads(threads)
    assert top1 > 0.5, f"top-1 {top1:.2f} on held-out pairs (chance 1/64)"


def _train_dual_on_synthetic_pairs(steps: int) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    project = torch.randn(VIDEO_DIM, AUDIO_DIM, generator=g) / VIDEO_DIM**0.5
    model = build_model("dual", VIDEO_DIM, AUDIO_DIM, hidden=128, embed_dim=64)  # half width: fast on CPU
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        v, a, lens = _synthetic_pairs(32, g, project)
        logits = model.score_matrix(model.encode_video(v, lens), model.encode_audio(a, lens))
        loss = sum(losses.info_nce(logits).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    v, a, lens = _synthetic_pairs(64, g, project)  # held-out clips
    with torch.no_grad():
        scores = model.score_matrix(model.encode_video(v, lens), model.encode_audio(a, lens))
    return (scores.argmax(1) == torch.arange(64)).float().mean().item()


@pytest.mark.parametrize("name", NAMES)
def test_declared_kind_is_what_the_model_does(name):
    """The registry's kind is what the rest of avmatch trusts: an embedding model gives unit clip
    embeddings whose scaled cosine is its score, a timing model has lag curves, a pair model neither."""
    model = build_model(name, VIDEO_DIM, AUDIO_DIM).eval()
    kind = capabilities(model)
    v, v_len = _batch(3, VIDEO_DIM, [6, 4, 5], 1)
    a, a_len = _batch(3, AUDIO_DIM, [5, 6, 3], 2)
    with torch.no_grad():
        ev, ea = model.encode_video(v, v_len), model.encode_audio(a, a_len)
        scores = model.score_matrix(ev, ea, v_len, a_len)
    assert kind.timing == hasattr(model, "lag_curve")
    if kind.embedding:
        assert ev.dim() == 2 and torch.allclose(ev.norm(dim=-1), torch.ones(3), atol=1e-5)
        expected = model.scale() * ev @ ea.T + model.logit_bias
        assert torch.allclose(scores, expected, atol=1e-5)
    else:
        assert not hasattr(model, "logit_bias") or kind.pair
    assert (kind.metric == "l2") == (name == "va-metric")



def test_rnn_is_the_plain_tanh_rnn_and_cell_rnn_works_for_every_recurrent_model():
    """The text's baseline: no gates (one weight block per layer, not four or three)."""
    rnn, lstm = build_model("rnn", VIDEO_DIM, AUDIO_DIM), build_model("lstm", VIDEO_DIM, AUDIO_DIM)
    assert isinstance(rnn.video.rnn, torch.nn.RNN) and rnn.video.rnn.nonlinearity == "tanh"
    assert rnn.video.rnn.weight_hh_l0.shape[0] * 4 == lstm.video.rnn.weight_hh_l0.shape[0]
    assert isinstance(build_model("lstm-tw", VIDEO_DIM, AUDIO_DIM, cell="rnn").video.rnn, torch.nn.RNN)


def test_a_long_lag_range_searched_by_fft_scores_what_the_direct_search_does():
    """Past FFT_FROM_LAGS lags the sync model cross-correlates by FFT: the same lag sums, the same
    score matrix and lag curves, lags beyond both clips at no overlap."""
    from avmatch.models.sync import SyncModel

    torch.manual_seed(0)
    model = SyncModel(10, 6, max_lag=40).eval()
    v, a = torch.randn(3, 50, 8), torch.randn(4, 70, 8)
    np.testing.assert_allclose(model._lag_sums_fft(v, a, False), model._lag_sums(v, a, False), atol=1e-4)
    np.testing.assert_allclose(model._lag_sums_fft(v, a[:3], True), model._lag_sums(v, a[:3], True), atol=1e-4)
    model.max_lag = 200  # past FFT_FROM_LAGS: _lag_sums itself takes the FFT path
    assert 2 * model.max_lag + 1 >= model.FFT_FROM_LAGS
    wide = model._lag_sums(v, a, False)
    assert wide.shape == (3, 4, 401) and float(wide[..., :130].abs().max()) == 0.0  # lag < -50: no overlap
    model.FFT_FROM_LAGS = 10_000  # the direct search at the same range
    np.testing.assert_allclose(wide, model._lag_sums(v, a, False), atol=1e-4)


def test_an_option_out_of_bounds_is_one_line_naming_the_model():
    from avmatch.errors import AvmatchError

    with pytest.raises(AvmatchError, match="model 'sync': kernel must be odd"):
        build_model("sync", VIDEO_DIM, AUDIO_DIM, kernel=2)
