"""The ecosystem interfaces of the results (issue 18): to_dataframe / to_xarray, short reprs, tqdm progress, the
plot helpers' ax= and colour scales, ``meanfield --version``, and complete annotations on the public API.

The conversions are checked against independent routes, exactly (they copy numbers, no arithmetic): the DataFrame of
a phase diagram against the CSV file :meth:`PhaseDiagram.to_csv` writes (parsed back with numpy), the xarray
coordinates by label lookup (``.sel``) against the array index the docstrings define, and the per-layer tables
against the layer-index conventions stated in :class:`ForwardResult` (``q1[l - 1]`` is layer l, ``qhat1[l]`` layer l).
"""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import meanfield as mf
from meanfield import _interop

pd_ = pytest.importorskip("pandas")
xr = pytest.importorskip("xarray")


@pytest.fixture(scope="module")
def diagram():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mf.phase_diagram("tanh", np.linspace(0.5, 4, 7), np.linspace(0, 0.5, 4))


@pytest.fixture(scope="module")
def net():
    return mf.Network("tanh", depth=4, weight_var=1.7, bias_var=0.05)


def test_phase_diagram_dataframe_matches_csv(diagram, tmp_path):
    df = diagram.to_dataframe()
    path = diagram.to_csv(tmp_path / "p.csv")
    csv = np.loadtxt(path, delimiter=",", skiprows=1)
    cols = ["weight_var", "bias_var", *mf.phase.QUANTITIES]
    assert list(df.columns[:2]) == ["bias_var", "weight_var"] and set(cols) <= set(df.columns)
    np.testing.assert_array_equal(df[cols].to_numpy(), csv)   # same rows, same order (weight_var fastest)
    assert df.attrs["activation"] == "tanh" and df.attrs["complete"] == 1


def test_phase_diagram_xarray_labels(diagram):
    ds = diagram.to_xarray()
    assert ds["chi1"].dims == ("bias_var", "weight_var")
    assert ds["critical_weight_var"].dims == ("bias_var",)
    for i, b in enumerate(diagram.bias_vars):
        for j, w in enumerate(diagram.weight_vars):
            for q in mf.phase.QUANTITIES:
                assert ds[q].sel(bias_var=b, weight_var=w).item() == pytest.approx(diagram[q][i, j], nan_ok=True,
                                                                                    rel=0, abs=0)
    np.testing.assert_array_equal(ds["critical_weight_var"].values, diagram.critical_weight_vars)


def test_depth_scale_curve_and_critical_line():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curve = mf.depth_scale_curve("erf", np.linspace(0.5, 2, 5), 0.0)
        line = mf.critical_line("tanh", [0.1, 0.2, 0.3], offsets=(1e-2, 1e-1))
    df = curve.to_dataframe()
    np.testing.assert_array_equal(df["weight_var"], curve.weight_vars)
    np.testing.assert_array_equal(df["xi_c"], curve.xi_c)
    assert df.attrs["critical_weight_var"] == curve.critical_weight_var
    ds = line.to_xarray()
    assert ds["xi_c"].dims == ("bias_var", "offset")
    assert ds["xi_c"].sel(bias_var=0.2, offset=1e-1).item() == line.xi_c[1, 1]
    ldf = line.to_dataframe()                    # rows (bias_var, offset), the critical columns repeated
    assert len(ldf) == 6
    row = ldf[(ldf.bias_var == 0.3) & (ldf.offset == 1e-2)].iloc[0]
    assert row["weight_var"] == line.weight_vars[2] and row["cstar"] == line.cstar[2, 0]


def test_map_dynamics_tables():
    md = mf.map_dynamics("tanh", [1.0, 3.0], bias_var=0.3, depth=4, q0=(0.5, 2.0), c0=(0.1, 0.5, 0.9), n_grid=11)
    df = md.to_dataframe()
    assert len(df) == 2 * 4 * (2 + 3)
    r = df[(df.quantity == "c") & (df.weight_var == 3.0) & (df.start == 0.5) & (df.layer == 3)]
    assert r["value"].item() == md.c_layers[1, 1, 2]
    ds = md.to_xarray()
    assert ds["q_layers"].dims == ("weight_var", "q_start", "layer")
    assert ds["length_map"].sel(weight_var=1.0).values.tolist() == md.length_map[0].tolist()
    assert ds["chi1"].sel(weight_var=3.0).item() == md.chi1[1] > 1 > md.chi1[0]   # tanh, b=0.3: chaotic at 3
    assert df.attrs["bias_var"] == 0.3


def test_forward_backward_layer_tables(net):
    fr = mf.forward(net, input_norm=0.7)
    df = fr.to_dataframe().set_index("layer")
    L = net.depth + 1
    assert list(df.index) == list(range(L + 1))
    for l in range(1, L + 1):
        assert df.loc[l, "q1"] == fr.q1[l - 1]
    for l in range(L):
        assert df.loc[l, "qhat1"] == fr.qhat1[l]
    assert np.isnan(df.loc[0, "q1"]) and np.isnan(df.loc[L, "qhat1"])
    assert df.loc[0, "qhat1"] == pytest.approx(0.7, rel=1e-15)     # the input's qhat is its norm |x|^2/M_0
    assert df.loc[1, "q1"] == pytest.approx(1.7 * 0.7 + 0.05, rel=1e-15)   # q^1 = sigma_w^2 qhat^0 + sigma_b^2
    bdf = mf.backward(net, forward_result=fr).to_dataframe()
    assert bdf["layer"].tolist() == list(range(1, L + 1)) and bdf["qtilde1"].iloc[-1] == 1.0
    assert fr.to_xarray()["qdot1"].dims == ("layer",)


def test_trace_tables(net):
    X = np.random.default_rng(2).normal(size=(3, 5))
    tr = mf.trace(net, X)
    ds = tr.to_xarray()
    assert ds["q"].dims == ("layer", "input_1", "input_2") and ds.sizes["layer"] == net.depth + 1
    assert ds["qtilde"].sel(layer=2, input_1=0, input_2=2).item() == tr.qtilde[1][0, 2]
    np.testing.assert_array_equal(ds["nngp"].values, tr.nngp)
    np.testing.assert_array_equal(ds["q"].sel(layer=net.depth + 1).values, tr.nngp)   # the output layer's q is the NNGP
    df = tr.to_dataframe()
    assert len(df) == (net.depth + 1) * 9
    r = df[(df.layer == 1) & (df.input_1 == 2) & (df.input_2 == 1)]
    assert r["qhat"].item() == tr.qhat[0][2, 1]


def test_kernels_and_fisher_tables(net):
    X = np.random.default_rng(0).normal(size=(3, 4))
    kr = mf.kernels(net, X)
    ds = kr.to_xarray()
    assert ds["nngp"].sel(x1=2, x2=0).item() == kr.nngp[2, 0] and ds["ntk"].dims == ("x1", "x2")
    assert len(kr.to_dataframe()) == 9
    fs = mf.fisher_statistics(net, width=64, n_samples=4)
    fdf = fs.to_dataframe()
    assert fdf["layer"].tolist() == list(range(1, net.depth + 2))
    np.testing.assert_array_equal(fdf["lambda_max"], fs.layer_lambda_max)
    assert fdf.attrs["lambda_max"] == fs.lambda_max
    fm = mf.feature_metric_statistics(net, width=64, n_samples=4).to_xarray()
    assert int(fm["layer"][0]) == 0          # the feature metric's blocks are the activations h^0..h^{L-1}


def test_missing_optional_package_error(monkeypatch, diagram):
    real = _interop.importlib.import_module

    def fake(name, *a, **k):
        if name in ("pandas", "xarray"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(_interop.importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"to_dataframe\(\) needs the optional package 'pandas'.*pip install pandas"):
        diagram.to_dataframe()
    with pytest.raises(ImportError, match=r"meanfield-theory\[interop\]"):
        diagram.to_xarray()


def test_reprs_are_short(diagram, net):
    X = np.random.default_rng(1).normal(size=(30, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        objs = [diagram, mf.kernels(net, X), mf.forward(net), mf.backward(net), mf.trace(net, X[:2]),
                mf.fisher_statistics(net, width=64, n_samples=4), mf.fixed_point("tanh", np.ones(50), 0.1),
                mf.depth_scale_curve("tanh", np.linspace(1, 3, 200)), mf.map_dynamics("tanh", [1.0, 2.0]),
                mf.nngp_regression(net, X, X[:, 0], X[:20], noise_var=0.1),
                mf.finite_width_fisher(net, 16, 3, seed=0), mf.deep_linear_prior(2, 5)]
    for obj in objs:
        text = repr(obj)
        assert text.startswith(type(obj).__name__ + "(")
        assert len(text.splitlines()) <= 4 and len(text) <= 500, (type(obj).__name__, len(text))
    assert "<array 4x7>" in repr(diagram)


def test_progress_options(diagram, capsys):
    calls = []
    w, b = diagram.weight_vars, diagram.bias_vars
    mf.phase_diagram("tanh", w, b, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (b.size, b.size)
    mf.phase_diagram("tanh", w, b, progress=True)
    err = capsys.readouterr().err
    assert "100%" in err and f"{b.size}/{b.size}" in err           # tqdm's bar on stderr
    mf.phase_diagram("tanh", w, b)                                 # default: silent
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="progress must be"):
        mf.phase_diagram("tanh", w, b, progress="yes")


def test_plot_helpers_take_ax_and_scales(diagram):
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    md = mf.map_dynamics("tanh", [1.0, 3.0], bias_var=0.3, depth=5, n_grid=11)
    fig, axs = plt.subplots(2, 2)
    out = md.plot(ax=axs)
    assert out.shape == (2, 2) and out[0, 0] is axs[0, 0]
    assert "ordered" in axs[0, 0].get_legend().get_texts()[1].get_text()
    assert "chaotic" in axs[0, 0].get_legend().get_texts()[2].get_text()
    with pytest.warns(DeprecationWarning, match="fig="):
        out = md.plot(fig=plt.figure())
    assert out.shape == (2, 2)
    # chi_1: log scale symmetric about the transition (chi_1 and 1/chi_1 equally far from the centre)
    ax = diagram.plot("chi1")
    norm = ax.collections[0].norm
    assert isinstance(norm, LogNorm) and norm.vmin * norm.vmax == pytest.approx(1.0, rel=1e-12)
    # relu's chaotic phase (q* = inf) is masked (grey, hatched), not painted in the cap colour
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        relu = mf.phase_diagram("relu", np.linspace(1.0, 3.0, 9), np.linspace(0.0, 0.5, 3))
    ax = relu.plot("xi_c")
    arr = ax.collections[0].get_array()
    diverged = np.isinf(relu.qstar).ravel()
    assert diverged.any() and np.all(np.ma.getmaskarray(arr).ravel()[diverged])
    assert any("q^*=\\infty" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close("all")


def test_cli_version(capsys):
    from meanfield.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"meanfield {mf.__version__}"


def _unannotated(fn):
    sig = inspect.signature(fn)
    bad = [p.name for p in sig.parameters.values() if p.name not in ("self", "cls") and p.annotation is p.empty]
    if sig.return_annotation is sig.empty and fn.__name__ != "__init__":
        bad.append("return")
    return bad


def test_public_api_is_annotated():
    """Every function exported from meanfield, and every public method of an exported class, annotates all its
    parameters and its return value (mypy, run in CI, checks that the annotations agree with the code)."""
    missing = {}
    for name in mf.__all__:
        obj = getattr(mf, name)
        if inspect.isclass(obj):
            if issubclass(obj, Warning):
                continue
            for k, v in vars(obj).items():
                if k.startswith("_") and k != "__call__":
                    continue
                v = v.__func__ if isinstance(v, (classmethod, staticmethod)) else v
                v = v.fget if isinstance(v, property) else v
                if inspect.isfunction(v) and _unannotated(v):
                    missing[f"{name}.{k}"] = _unannotated(v)
        elif inspect.isfunction(obj) and _unannotated(obj):
            missing[name] = _unannotated(obj)
    assert not missing, missing
