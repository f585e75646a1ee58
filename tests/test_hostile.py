"""Hostile-input property tests: every public function over its whole float64 range and beyond.

Each test draws every numeric argument of one public function either from a *sane* strategy (a value inside the
documented range, kept small where the argument is not the one under attack: depth <= 3, a handful of data points)
or from a *hostile* pool (0, -0.0, subnormals, 1e-300, 1e300, the largest float, NaN, +-inf, negative numbers,
arbitrary floats, and non-floats: str, None, complex, bool, lists, arrays of odd shapes, objects).  One shared helper,
:func:`outcome`, classifies what the call did; the only acceptable outcomes are

* a result whose numbers are all finite and lie in the documented range (checked by a small per-test ``check``:
  q* >= bias_var, chi_1 >= 0, c* in [0, 1], kernels symmetric and positive semi-definite up to round-off,
  variances >= 0, closed forms where the activation has one (relu, linear, erf));
* ``inf`` accompanied by a documented warning (:mod:`meanfield.errors`: DivergenceWarning, ...), or ``nan``
  accompanied by ConvergenceWarning / NoCriticalPointWarning (documented as "the affected entries are NaN"); a few
  fields are documented as ``inf`` without a warning (depth scales at criticality, t = inf) and are listed per test;
* ``ValueError`` / ``TypeError`` whose message names the offending parameter (one of the arguments that received a
  hostile value);

and every call must return within ``CALL_LIMIT_S`` seconds (5 s).  Anything else -- a silent NaN, a wrong number,
an ``OverflowError``, ``ZeroDivisionError``, ``AttributeError``, ``IndexError``, ``LinAlgError`` without the
parameter's name, a complex result, a slow call -- is a defect.  The tests state the contract; they are *not* xfailed
where the library does not yet meet it.

Example budget (hypothesis profiles registered in ``tests/conftest.py``):

* default (part of the ordinary test run): ``max_examples = 5`` per test, derandomized (the whole file runs in
  about a minute on 2 cores with a warm numba cache; the module fixture compiles the kernels first, outside the
  per-call limit);
* ``MEANFIELD_HYPOTHESIS=thorough``: ``max_examples = 500`` random examples per test
  (``MEANFIELD_HYPOTHESIS_EXAMPLES=N`` overrides the number), for hunting defects, e.g.
  ``MEANFIELD_HYPOTHESIS=thorough python -m pytest -q tests/test_hostile.py``. Only this profile also runs the
  maps of custom activations built from hostile arguments (each new activation compiles its own kernels, a minute
  or more).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import meanfield as mf
from meanfield.errors import ConvergenceWarning, DivergenceWarning, NoCriticalPointWarning

CALL_LIMIT_S = 5.0

THOROUGH = os.environ.get("MEANFIELD_HYPOTHESIS", "") == "thorough"
PROFILE = "hostile-thorough" if THOROUGH else "hostile-default"
budget = settings.get_profile(PROFILE)
DOC_WARNINGS = (DivergenceWarning, ConvergenceWarning, NoCriticalPointWarning)
NAN_WARNINGS = (ConvergenceWarning, NoCriticalPointWarning)
# fields documented as NaN where q* = inf, which DivergenceWarning announces (FixedPoint: "xi_q ... NaN where q* = inf")
DIVERGENCE_NAN = ("xi_q", "vprime")
BOUNDED = {"tanh": 1.0, "erf": 1.0, "sigmoid": 1.0, "hard_tanh": 1.0, "sin": 1.0}   # sup |phi|
ACTS = tuple(mf.ACTIVATIONS)

# ----------------------------------------------------------------------------------------------------------------
# the shared outcome classifier


def _leaves(obj, key="result", depth=0):
    """Yield ``(name, float array)`` for every numeric leaf of a result (numbers, arrays, tuples, dataclasses)."""
    if depth > 3 or obj is None or isinstance(obj, (str, bytes, bool, mf.Network, mf.Activation)) or callable(obj):
        return
    if isinstance(obj, (int, float, np.number)):
        yield key, np.asarray(obj)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fciu":
            yield key, obj
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if f.name in ("network", "forward", "activation"):
                continue
            yield from _leaves(getattr(obj, f.name), f.name, depth + 1)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{key}[{k!r}]", depth + 1)
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{key}[{i}]", depth + 1)


def outcome(fn, *args, names=(), check=None, inf_ok=(), nan_ok=(), **kwargs):
    """Call ``fn(*args, **kwargs)`` and assert that the outcome is one of the acceptable ones (module docstring).

    ``names``: the parameters that received a hostile value (an error message must name one of them).
    ``check(result)``: range assertions on a returned result (applied to its finite entries by the test).
    ``inf_ok`` / ``nan_ok``: result fields documented to be inf / nan without a warning.
    Returns the result, or None when a ValueError/TypeError naming a parameter was raised.
    """
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            res = fn(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            assert names and any(n in msg for n in names), (
                f"{type(exc).__name__} from {fn.__name__} does not name any hostile parameter {list(names)}: {msg!r}")
            _assert_fast(fn, t0)
            return None
    _assert_fast(fn, t0)
    warned = [type(w.message) for w in rec]
    for key, arr in _leaves(res):
        assert arr.dtype.kind != "c", f"{fn.__name__}: complex result in {key}"
        arr = np.asarray(arr, dtype=np.float64)
        if np.isnan(arr).any() and key not in nan_ok:
            ok = NAN_WARNINGS + ((DivergenceWarning,) if key in DIVERGENCE_NAN else ())
            assert any(issubclass(w, ok) for w in warned), (
                f"{fn.__name__}: silent NaN in {key} (warnings: {[w.__name__ for w in warned]})")
        if np.isinf(arr).any() and key not in inf_ok:
            assert any(issubclass(w, DOC_WARNINGS) for w in warned), (
                f"{fn.__name__}: inf in {key} without a documented warning (warnings: {[w.__name__ for w in warned]})")
    if check is not None:
        check(res)
    return res


def _assert_fast(fn, t0):
    dt = time.perf_counter() - t0
    assert dt < CALL_LIMIT_S, f"{fn.__name__} took {dt:.1f} s (limit {CALL_LIMIT_S} s)"


def _as_array(x):
    """``x`` as a float64 array, or None if it is not real numeric input (the call then had to reject it)."""
    if isinstance(x, (str, bytes)) or x is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def fin(x):
    """The finite entries of ``x`` as a flat float64 array."""
    a = np.asarray(x, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def ge(x, lo, rtol=1e-12, what="value"):
    a, lo = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(lo, dtype=float))
    m = np.isfinite(a) & np.isfinite(lo)
    assert np.all(a[m] >= lo[m] - rtol * np.abs(lo[m]) - 1e-300), f"{what} below {lo[m].min()}: {a[m].min()}"


def le(x, hi, rtol=1e-12, what="value"):
    a, hi = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(hi, dtype=float))
    m = np.isfinite(a) & np.isfinite(hi)
    assert np.all(a[m] <= hi[m] + rtol * np.abs(hi[m]) + 1e-300), f"{what} above {hi[m].max()}: {a[m].max()}"


# ----------------------------------------------------------------------------------------------------------------
# strategies

SPECIAL = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 1e-150, 1e-16, 1e-8, 0.5, 1.0, 2.0, 1e8, 1e150,
           1e200, 1e300, 1.7976931348623157e308, -5e-324, -1e-300, -1.0, -1e300, math.nan, math.inf, -math.inf]
NON_FLOATS = [None, "1.0", "tanh", b"1", 1 + 1j, 0j, True, False, [1.0, 2.0], [[1.0]], [], (), np.array([]),
              np.ones((2, 3)), np.zeros((1, 1, 2)), np.array([1 + 2j]), np.array(["a"]), np.array([np.nan]),
              object(), {}, np.float32(0.5), np.int64(2), Fraction(1, 2), Decimal("0.5"), np.float64(np.inf)]
hostile_float = st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True))
hostile = st.one_of(hostile_float, st.sampled_from(NON_FLOATS), st.integers(-10**30, 10**30))

# sane values (documented range, moderate size)
var = st.floats(0.0, 4.0)
pos_var = st.floats(0.05, 4.0)
corr = st.floats(-1.0, 1.0)
keep = st.floats(0.2, 1.0)
small_int = st.integers(1, 3)
activation = st.sampled_from(ACTS)


def tagged(sane, bad=hostile):
    """Draw ``(is_hostile, value)``: a sane value or a hostile one."""
    return st.one_of(sane.map(lambda v: (False, v)), bad.map(lambda v: (True, v)))


def draw(data, **spec):
    """Draw each named argument from ``tagged(spec[name])``; return the values and the names of the hostile ones."""
    vals, names = {}, []
    for name, sane in spec.items():
        bad = hostile
        if isinstance(sane, tuple):
            sane, bad = sane
        is_bad, v = data.draw(tagged(sane, bad), label=name)
        vals[name] = v
        if is_bad:
            names.append(name)
    return vals, names


hostile_act = st.sampled_from(["nope", "", "TANH ", None, 3, 1.5, [], ("tanh",), b"tanh"])


def matrix(n_rows, n_cols, lo=-3.0, hi=3.0):
    return st.lists(st.lists(st.floats(lo, hi), min_size=n_cols, max_size=n_cols), min_size=n_rows,
                    max_size=n_rows).map(lambda m: np.array(m, dtype=float))


def data_x(n_max=4, d=3):
    return st.integers(1, n_max).flatmap(lambda n: matrix(n, d))


hostile_array = st.one_of(
    hostile,
    st.sampled_from([np.zeros((0, 3)), np.zeros((3, 0)), np.ones(3), np.ones((2, 3, 1)), np.array([[np.nan, 1, 2]]),
                     np.array([[np.inf, 1, 2]]), np.full((2, 3), 1e300), np.full((2, 3), 1e-300),
                     np.ones((2, 3)) * (1 + 1j), np.array([["a", "b", "c"]]), [[1.0, 2.0, 3.0], [1.0]],
                     np.ones((2, 4)), np.full((2, 3), 1.7e308), np.array([[True, False, True]])]),
    matrix(2, 3, -1e300, 1e300))


def net_strategy():
    return st.builds(lambda a, d, w, b: mf.Network(a, depth=d, weight_var=w, bias_var=b),
                     activation, small_int, pos_var, st.floats(0.0, 1.0))


# ----------------------------------------------------------------------------------------------------------------
# warm-up: compile every kernel once, outside the per-call time limit


@pytest.fixture(scope="module", autouse=True)
def _warm():
    calls = [(mf.fixed_point, a, 1.5, 0.05) for a in ACTS] + [(mf.length_map, a, 1.0, 1.5, 0.05) for a in ACTS]
    calls += [(mf.correlation_map, a, 0.5, 1.5, 0.05) for a in ACTS] + [(mf.critical_weight_var, a, 0.05) for a in ACTS]
    calls += [(mf.pair_expectation, a, 1.0, 1.0, 0.5, d) for a in ACTS for d in (False, True)]
    calls += [(mf.hermite_coefficients, "tanh", 1.0, None, d) for d in (False, True)]
    calls += [(mf.gaussian_expectation, f, 1.0) for f in ("tanh", "relu", np.abs)] + [(mf.gaussian_rule, 1.0)]
    calls += [(mf.mehler_terms, "tanh", 1.0)]
    for a in ("tanh", "relu", "erf", "selu", "linear", "hard_tanh"):
        net = mf.Network(a, depth=2, weight_var=1.5, bias_var=0.05)
        calls += [(mf.kernels, net, np.eye(3)), (mf.nngp_kernel, net, np.eye(3), np.ones((2, 3))),
                  (mf.ntk_kernel, net, np.eye(3)), (mf.nngp_diagonal, net, np.eye(3)), (mf.forward, net),
                  (mf.backward, net), (mf.forward, net, 1.0, 2.0, 0.3),
                  (lambda n=net: mf.kernels(n, np.eye(3), parameterization="standard", width=10.0),)]
    net = mf.Network("tanh", depth=2, weight_var=1.5, bias_var=0.05)
    calls += [(mf.fisher_statistics, net, 64, 4, 2), (lambda: mf.fisher_statistics(net, 64, 4, 2, "ntk"),),
              (lambda: mf.fisher_statistics(net, 64, 4, 2, loss="cross_entropy", n_mc=5),),
              (mf.feature_metric_statistics, net, 64, 4, 2),
              (lambda: mf.feature_metric_statistics(net, 64, 4, 2, loss="cross_entropy", n_mc=5),),
              (mf.phase_diagram, "tanh", [1.0, 2.0], [0.0, 0.1]), (mf.critical_line, "tanh", [0.0, 0.1]),
              (mf.depth_scale_curve, "tanh", [1.0, 2.0], 0.1), (mf.map_dynamics, "tanh", [1.0, 2.0], 0.1),
              (mf.nngp_regression, net, np.eye(3), np.ones(3), np.ones((2, 3)), 0.1),
              (mf.ntk_regression, net, np.eye(3), np.ones(3), np.ones((2, 3)))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn, *args in calls:
            try:     # a failure here is reported by the tests themselves
                fn(*args)
            except Exception:  # noqa: BLE001
                pass
    yield


# ----------------------------------------------------------------------------------------------------------------
# forward order parameters

def _closed_v(act, q, w, b, rho=1.0):
    """Independent closed forms of V(q) (relu: w q / 2 + b; linear: w q + b; erf: (2/pi) arcsin(2q/(1+2q)))."""
    q = np.asarray(q, dtype=float)
    if act == "relu":
        e = q / 2
    elif act == "linear":
        e = q
    elif act == "erf":
        # arcsin(2q/(1+2q)) = arctan2(2q, sqrt(1 + 4q)): the arcsin form is ill-conditioned at large q (its argument
        # 1 - 1/(1+2q) rounds, giving a 1e-9 error at q ~ 1e15), the arctan2 form is not
        e = (2 / np.pi) * np.arctan2(2 * q, np.sqrt(1 + 4 * q)) if np.all(q < 1e300) else np.ones_like(q)
    else:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        return w / rho * e + b


@budget
@given(st.data())
def test_length_map(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, q=var, weight_var=var, bias_var=var, dropout_keep=keep)

    def check(r):
        q, b, w, rho = (_as_array(v[k]) for k in ("q", "bias_var", "weight_var", "dropout_keep"))
        r = np.asarray(r, dtype=float)
        ge(r, b, what="V(q) vs bias_var")
        with np.errstate(over="ignore", invalid="ignore"):
            if act in BOUNDED:
                le(r, w / rho * BOUNDED[act] ** 2 + b, 1e-10, what="V(q) of a bounded phi")
            ref = _closed_v(act, q, w, b, rho)
        if ref is not None:
            r, ref = np.broadcast_arrays(r, ref)
            ok = np.isfinite(ref)
            assert np.all(np.isfinite(r[ok])), f"V(q) = {r[ok]} where the closed form is finite {ref[ok]}"
            np.testing.assert_allclose(r[ok], ref[ok], rtol=1e-12, atol=0,
                                       err_msg=f"length map vs closed form for {act}")
    outcome(mf.length_map, act, v["q"], v["weight_var"], v["bias_var"], dropout_keep=v["dropout_keep"],
            names=names, check=check)


@budget
@given(st.data())
def test_length_map_activation_spec(data):
    a = data.draw(hostile_act, label="activation")
    outcome(mf.length_map, a, 1.0, 1.5, 0.05, names=["activation"])


@budget
@given(st.data())
def test_correlation_map(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, c=corr, weight_var=pos_var, bias_var=var, q=st.one_of(st.none(), pos_var))
    deriv = data.draw(st.booleans(), label="return_derivative")
    if v["q"] is None and not names:
        # at q* = 0 the map C(c; q*) = (...)/q* is 0/0: documented ValueError naming the parameters that give q* = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if mf.qstar(act, v["weight_var"], v["bias_var"]) == 0.0:
                names = ["weight_var", "bias_var"]

    def check(r):
        val, dval = (r if deriv else (r, None))
        if v["q"] is None:           # q = q*: Cauchy-Schwarz |C| <= V(q*)/q* = 1
            le(np.abs(val), 1.0, 1e-10, what="|C(c; q*)|")
        c = _as_array(v["c"])
        if dval is not None and c is not None and np.all(c >= 0):
            ge(dval, 0.0, what="dC/dc at c >= 0")
    outcome(mf.correlation_map, act, v["c"], v["weight_var"], v["bias_var"], v["q"], return_derivative=deriv,
            names=names, check=check)


def _fp_check(act, w, b, rho=1.0):
    """Range and closed-form checks of a FixedPoint at (w, b, rho) (given as they were passed to the call)."""
    w, b, rho = _as_array(w), _as_array(b), _as_array(rho)

    def check(fp):
        ge(fp.chi_1, 0.0, what="chi_1")
        ge(fp.chi_c, 0.0, what="chi_c")
        ge(fp.c_star, 0.0, what="c*")
        le(fp.c_star, 1.0, what="c*")
        # xi = -1/log|slope| is documented negative exactly where the slope exceeds 1 in modulus (an unstable fixed
        # point, e.g. q* = 0 reached from q_init = 0 with V'(0) > 1)
        _xi_sign(fp.xi_q, fp.vprime, "xi_q")
        _xi_sign(fp.xi_c, fp.chi_c, "xi_c")
        _xi_sign(fp.xi_grad, fp.chi_1, "xi_grad")
        if w is None or b is None or rho is None:
            return
        _qstar_check(act, fp.q_star, w, b, rho)
    return check


def _xi_sign(xi, slope, what):
    xi, slope = np.broadcast_arrays(np.asarray(xi, dtype=float), np.asarray(slope, dtype=float))
    m = np.isfinite(xi) & np.isfinite(slope) & (xi != 0)
    assert np.array_equal(xi[m] < 0, np.abs(slope[m]) > 1), f"{what} sign inconsistent with its slope {slope[m]}"


def _qstar_check(act, q, w, b, rho=1.0):
    """q* >= bias_var; q* <= weight_var / rho + bias_var for |phi| <= 1; V(q*) = q* for the closed forms."""
    qs = np.asarray(q, dtype=float)
    ge(qs, b, what="q* vs bias_var")
    with np.errstate(over="ignore", invalid="ignore"):
        if act in BOUNDED:
            le(qs, w / rho * BOUNDED[act] ** 2 + b, 1e-10, what="q* of a bounded phi")
        ref = _closed_v(act, qs, w, b, rho)
    if ref is not None:
        ref = np.broadcast_to(ref, qs.shape)
        ok = np.isfinite(qs) & np.isfinite(ref)
        np.testing.assert_allclose(ref[ok], qs[ok], rtol=1e-9,
                                   err_msg=f"q* is not a fixed point of the closed-form V for {act}")


@budget
@given(st.data())
def test_fixed_point(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, weight_var=pos_var, bias_var=var, dropout_keep=keep, q_init=st.one_of(st.none(), pos_var))
    outcome(mf.fixed_point, act, v["weight_var"], v["bias_var"], dropout_keep=v["dropout_keep"], q_init=v["q_init"],
            names=names, inf_ok=("xi_q", "xi_c", "xi_grad"),
            check=_fp_check(act, v["weight_var"], v["bias_var"], v["dropout_keep"]))


@budget
@given(st.data())
def test_qstar(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, weight_var=pos_var, bias_var=var)

    w, b = _as_array(v["weight_var"]), _as_array(v["bias_var"])
    outcome(mf.qstar, act, v["weight_var"], v["bias_var"], names=names,
            check=lambda q: _qstar_check(act, q, w, b) if w is not None and b is not None else None)


@budget
@given(st.data())
def test_cstar_chi(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, weight_var=pos_var, bias_var=var)
    fn = data.draw(st.sampled_from([mf.cstar, mf.chi1, mf.chi_c]), label="function")

    def check(r):
        ge(r, 0.0, what=fn.__name__)
        if fn is mf.cstar:
            le(r, 1.0, what="c*")
    outcome(fn, act, v["weight_var"], v["bias_var"], names=names, check=check)


@budget
@given(st.data())
def test_depth_scales(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, weight_var=pos_var, bias_var=var, dropout_keep=keep)

    def check(ds):     # the same depth scales as fixed_point's (whose signs _fp_check checks against the slopes)
        if not names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fp = mf.fixed_point(act, v["weight_var"], v["bias_var"], dropout_keep=v["dropout_keep"])
            np.testing.assert_array_equal(np.array(tuple(ds), dtype=float),
                                          np.array([fp.xi_q, fp.xi_c, fp.xi_grad], dtype=float))
    outcome(mf.depth_scales, act, v["weight_var"], v["bias_var"], dropout_keep=v["dropout_keep"], names=names,
            inf_ok=("xi_q", "xi_c", "xi_grad"), check=check)


@budget
@given(st.data())
def test_critical_weight_var(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, bias_var=st.floats(0.0, 1.0))
    ret_q = data.draw(st.booleans(), label="return_qstar")

    def check(r):
        w = r[0] if ret_q else r
        ge(w, 0.0, what="critical weight_var")
        if ret_q:
            ge(r[1], v["bias_var"], what="q* on the critical line")
    outcome(mf.critical_weight_var, act, v["bias_var"], return_qstar=ret_q, names=names, check=check,
            inf_ok=("result[1]",))


# ----------------------------------------------------------------------------------------------------------------
# Network, forward, backward

@budget
@given(st.data())
def test_network_constructor(data):
    v, names = draw(data, activation=(activation, st.one_of(hostile_act, hostile)), depth=(small_int, hostile),
                    weight_var=pos_var, bias_var=var, dropout_keep=keep,
                    width_ratios=(st.none(), st.one_of(hostile, st.just([1.0]), st.just([1.0, -1.0, 1.0]))),
                    activation_params=(st.just({}), st.sampled_from([{"slope": math.nan}, {"alpha": -math.inf},
                                                                     {"bogus": 1.0}, {"slope": "x"}, None, [1]])))
    if "activation_params" in names:
        names = names + ["slope", "alpha", "bogus"]
    outcome(mf.Network, **v, names=names)


@budget
@given(st.data())
def test_forward_backward(data):
    net = data.draw(net_strategy(), label="network")
    v, names = draw(data, input_norm=pos_var, input_norm2=st.one_of(st.none(), pos_var),
                    input_overlap=st.floats(-0.05, 0.05))

    def check_f(fr):
        ge(fr.q1, 0.0, what="q1")
        ge(fr.qhat1, 0.0, what="qhat1")
        ge(fr.qdot1, 0.0, what="qdot1")
        le(np.abs(fin(fr.c)), 1.0, 1e-12, what="|c|")
    fr = outcome(mf.forward, net, names=names, check=check_f, **v)
    if fr is not None:
        outcome(mf.backward, net, fr, names=[], check=lambda br: ge(br.qtilde1, 0.0, what="qtilde1"))


@budget
@given(st.data())
def test_backward_forward_result(data):
    net = data.draw(net_strategy(), label="network")
    bad = data.draw(st.one_of(hostile, st.just(mf.forward(mf.Network("relu", depth=5)))), label="forward_result")
    outcome(mf.backward, net, forward_result=bad, names=["forward_result"])


@budget
@given(st.data())
def test_network_hostile_forward(data):
    """A Network built from hostile per-layer variances either is rejected or propagates cleanly."""
    act = data.draw(activation, label="activation")
    depth = data.draw(small_int, label="depth")
    v, names = draw(data, weight_var=pos_var, bias_var=var)
    net = outcome(mf.Network, act, depth=depth, weight_var=v["weight_var"], bias_var=v["bias_var"], names=names)
    if net is not None:
        outcome(mf.forward, net, names=names, check=lambda fr: ge(fr.q1, 0.0, what="q1"))
        outcome(mf.backward, net, names=names, check=lambda br: ge(br.qtilde1, 0.0, what="qtilde1"))


# ----------------------------------------------------------------------------------------------------------------
# quadrature

@budget
@given(st.data())
def test_gaussian_expectation(data):
    kind = data.draw(st.sampled_from(["u2", "relu", "tanh", "abs"]), label="fn")
    v, names = draw(data, q=var, scale=(st.just(1.0), hostile), kinks=(st.just(()), st.one_of(hostile, st.just(
        [math.nan]), st.just([math.inf]))))
    fn = {"u2": lambda u: u ** 2, "relu": "relu", "tanh": "tanh", "abs": np.abs}[kind]

    def check(r):
        q = _as_array(v["q"])
        if q is None or "scale" in names or "kinks" in names:
            return
        ref = {"u2": q, "relu": np.sqrt(q / (2 * np.pi)), "abs": np.sqrt(2 * q / np.pi), "tanh": 0 * q}[kind]
        np.testing.assert_allclose(np.asarray(r, dtype=float), ref, rtol=1e-12, atol=1e-15 if kind == "tanh" else 0,
                                   err_msg=f"E[{kind}(u)] vs closed form")
    outcome(mf.gaussian_expectation, fn, v["q"], scale=v["scale"], kinks=v["kinks"], names=names, check=check)


@budget
@given(st.data())
def test_gaussian_rule(data):
    v, names = draw(data, q=var, scale=(st.floats(0.1, 10.0), hostile), kinks=(st.just(()), hostile),
                    graded=(st.booleans(), hostile))

    def check(r):
        z, w = r
        assert np.all(np.isfinite(z)) and np.all(np.isfinite(w))
        ge(w, 0.0, what="weights")
        np.testing.assert_allclose(np.sum(w), 1.0, rtol=1e-12)
    outcome(mf.gaussian_rule, v["q"], scale=v["scale"], kinks=v["kinks"], graded=v["graded"], names=names, check=check)


@budget
@given(st.data())
def test_pair_expectation(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, q_u=var, q_v=var, c=corr)
    deriv = data.draw(st.booleans(), label="derivative")
    qu, qv, c = v["q_u"], v["q_v"], v["c"]
    if names:
        quv, nm = c, names + ["q_uv"]
    else:
        quv, nm = c * math.sqrt(qu * qv), names
    # Cauchy-Schwarz: |E[f(u)f(v)]| <= sqrt(E f(u)^2 E f(v)^2)

    def check(r):
        if not names:
            eu = mf.pair_expectation(act, qu, qu, qu, derivative=deriv)
            ev = mf.pair_expectation(act, qv, qv, qv, derivative=deriv)
            le(np.abs(r), math.sqrt(eu * ev), 1e-10, what="|E[f(u) f(v)]| (Cauchy-Schwarz)")
    outcome(mf.pair_expectation, act, qu, qv, quv, derivative=deriv, names=nm, check=check)


@budget
@given(st.data())
def test_hermite_coefficients(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, q=pos_var, n_terms=(st.one_of(st.none(), st.integers(1, 40)), hostile))
    deriv = data.draw(st.booleans(), label="derivative")

    def check(a):
        a = np.asarray(a)
        if v["n_terms"] is not None and not names:
            assert a.shape[-1] == v["n_terms"]
        if not names:   # Parseval: sum a_k^2 <= E[f^2]
            e2 = mf.pair_expectation(act, v["q"], v["q"], v["q"], derivative=deriv)
            le(np.sum(a ** 2, axis=-1), e2, 1e-9, what="sum a_k^2 (Parseval)")
    outcome(mf.hermite_coefficients, act, v["q"], n_terms=v["n_terms"], derivative=deriv, names=names, check=check)


@budget
@given(st.data())
def test_mehler_terms(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, q=pos_var)

    def check(n):
        assert isinstance(n, (int, np.integer)) and 1 <= n <= 100_000, f"mehler_terms = {n!r}"
    outcome(mf.mehler_terms, act, v["q"], names=names, check=check)


# ----------------------------------------------------------------------------------------------------------------
# kernels and regression

def _psd_check(k, sym=True):
    k = np.asarray(k, dtype=float)
    if sym:
        assert np.array_equal(k, k.T), "kernel not exactly symmetric"
        if np.all(np.isfinite(k)) and k.size:
            ev = np.linalg.eigvalsh(k)
            assert ev.min() >= -1e-10 * max(abs(ev).max(), 1e-300), f"kernel not PSD: {ev.min()} vs {ev.max()}"


@budget
@given(st.data())
def test_nngp_ntk_kernel(data):
    net = data.draw(net_strategy(), label="network")
    v, names = draw(data, x1=(data_x(), hostile_array), x2=(st.none(), hostile_array))
    fn = data.draw(st.sampled_from([mf.nngp_kernel, mf.ntk_kernel]), label="function")
    outcome(fn, net, v["x1"], v["x2"], names=names, check=lambda k: _psd_check(k, v["x2"] is None))


@budget
@given(st.data())
def test_kernels_options(data):
    net = data.draw(net_strategy(), label="network")
    x = data.draw(data_x(), label="x")
    v, names = draw(data, parameterization=(st.sampled_from(["ntk", "standard"]), st.one_of(
        hostile, st.sampled_from(["NTK", "sp", ""]))), width=(st.floats(1.0, 1e4), hostile),
        rtol=(st.floats(1e-15, 1e-3), hostile), tile_size=(st.integers(8, 600), hostile),
        compute_ntk=(st.booleans(), hostile))

    def check(r):
        _psd_check(r.nngp)
        if r.ntk is not None:
            _psd_check(r.ntk)
    outcome(mf.kernels, net, x, **v, names=names, check=check)


@budget
@given(st.data())
def test_nngp_diagonal(data):
    net = data.draw(net_strategy(), label="network")
    v, names = draw(data, x=(data_x(), hostile_array), rtol=(st.just(1e-14), hostile))
    outcome(mf.nngp_diagonal, net, v["x"], rtol=v["rtol"], names=names, check=lambda d: ge(d, 0.0, what="K(x, x)"))


def _spd(n):
    return matrix(n, n, -2, 2).map(lambda a: a @ a.T + n * np.eye(n))


@budget
@given(st.data())
def test_gp_posterior(data):
    n = data.draw(st.integers(1, 4), label="n")
    k = data.draw(_spd(n), label="k")
    v, names = draw(data, k_train=(st.just(k), st.one_of(hostile_array, st.just(k + np.triu(np.ones((n, n)), 1)),
                                                          st.just(-k))),
                    k_cross=(st.just(k[:2]), hostile_array), y_train=(matrix(n, 1).map(lambda m: m[:, 0]), hostile),
                    k_test=(st.just(np.diag(k)[:2]), hostile), noise_var=(st.floats(0.0, 1.0), hostile))

    if "k_train" in names:   # a kernel that is not positive definite: the advice names noise_var
        names = names + ["noise_var"]

    def check(p):
        ge(p.variance, 0.0, what="posterior variance")
    outcome(mf.gp_posterior, v["k_train"], v["k_cross"], v["y_train"], v["k_test"], v["noise_var"],
            names=names, check=check)


@budget
@given(st.data())
def test_ntk_gradient_flow(data):
    n = data.draw(st.integers(1, 4), label="n")
    k = data.draw(_spd(n), label="theta")
    v, names = draw(data, theta_train=(st.just(k), hostile_array), theta_cross=(st.just(k[:2]), hostile_array),
                    y_train=(matrix(n, 1).map(lambda m: m[:, 0]), hostile),
                    t=(st.one_of(st.floats(0, 1e6), st.just(math.inf), st.just([0.0, 1.0, math.inf])), hostile),
                    learning_rate=(st.floats(1e-3, 10.0), hostile))
    # condition_number: documented inf, with a RuntimeWarning, for a singular theta_train (ntk_condition_number)
    outcome(mf.ntk_gradient_flow, **v, names=names, inf_ok=("times", "condition_number"), check=lambda p: None)


@budget
@given(st.data())
def test_ntk_condition_number(data):
    n = data.draw(st.integers(1, 4), label="n")
    v, names = draw(data, theta=(_spd(n), st.one_of(hostile_array, st.just(np.zeros((2, 2))),
                                                     st.just(np.array([[1.0, 0], [0, -1.0]])))))
    # a singular kernel is documented as inf "with a warning": any RuntimeWarning is accepted there

    def run(theta):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            r = mf.ntk_condition_number(theta)
        if r == math.inf:
            assert any(issubclass(w.category, RuntimeWarning) for w in rec), "inf condition number without a warning"
            return 1.0
        return r
    run.__name__ = "ntk_condition_number"
    outcome(run, v["theta"], names=names, check=lambda r: ge(r, 1.0, 1e-12, what="condition number"))


@budget
@given(st.data())
def test_nngp_ntk_regression(data):
    net = data.draw(net_strategy(), label="network")
    n = data.draw(st.integers(1, 4), label="n")
    v, names = draw(data, x_train=(matrix(n, 3), hostile_array), y_train=(matrix(n, 1).map(lambda m: m[:, 0]), hostile),
                    x_test=(matrix(2, 3), hostile_array), noise_var=(st.floats(1e-3, 1.0), hostile))
    which = data.draw(st.booleans(), label="nngp")
    if which:
        outcome(mf.nngp_regression, net, v["x_train"], v["y_train"], v["x_test"], v["noise_var"], names=names,
                check=lambda p: ge(p.variance, 0.0, what="posterior variance"))
    else:
        outcome(mf.ntk_regression, net, v["x_train"], v["y_train"], v["x_test"], learning_rate=v["noise_var"],
                names=[n.replace("noise_var", "learning_rate") for n in names], inf_ok=("times", "condition_number"))


# ----------------------------------------------------------------------------------------------------------------
# Fisher information

def _fisher_check(st_):
    ge(st_.mean_eigenvalue, 0.0, what="mean eigenvalue")
    ge(st_.second_moment, 0.0, what="second moment")
    ge(st_.lambda_max, st_.mean_eigenvalue, 1e-9, what="lambda_max vs mean")
    ge(st_.eta_critical, 0.0, what="eta_critical")


@budget
@given(st.data())
def test_fisher_statistics(data):
    net = data.draw(net_strategy(), label="network")
    v, names = draw(data, width=(st.integers(8, 4096), hostile), n_samples=(st.integers(1, 16), hostile),
                    n_outputs=(st.integers(2, 3), hostile),
                    parameterization=(st.sampled_from(["standard", "ntk"]), hostile),
                    loss=(st.sampled_from(["mse", "cross_entropy"]), hostile), n_mc=(st.integers(5, 20), hostile),
                    seed=(st.integers(0, 10), hostile))
    outcome(mf.fisher_statistics, net, **v, names=names, check=_fisher_check,
            nan_ok=("bulk_eigenvalue", "condition_number", "outliers_large_T"))


@budget
@given(st.data())
def test_feature_metric_statistics(data):
    net = data.draw(net_strategy(), label="network")
    v, names = draw(data, width=(st.integers(8, 4096), hostile), n_samples=(st.integers(1, 16), hostile),
                    n_outputs=(st.integers(2, 3), hostile), loss=(st.sampled_from(["mse", "cross_entropy"]), hostile),
                    n_mc=(st.integers(5, 20), hostile), seed=(st.integers(0, 10), hostile))

    def check(s):
        ge(s.mean_eigenvalue, 0.0, what="mean eigenvalue")
        ge(s.lambda_max, 0.0, what="lambda_max")
    outcome(mf.feature_metric_statistics, net, **v, names=names, check=check)


# ----------------------------------------------------------------------------------------------------------------
# phase diagrams

inc_wvars = st.lists(st.floats(0.1, 4.0), min_size=1, max_size=3, unique=True).map(sorted)
inc_bvars = st.lists(st.floats(0.0, 0.5), min_size=1, max_size=3, unique=True).map(sorted)


def _pd_check(pd):
    ge(pd.qstar, pd.bias_vars[:, None], what="q* vs bias_var")
    ge(pd.chi1, 0.0, what="chi_1")
    ge(pd.cstar, 0.0, what="c*")
    le(pd.cstar, 1.0, what="c*")


@budget
@given(st.data())
def test_phase_diagram(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, weight_vars=(inc_wvars, hostile_array), bias_vars=(inc_bvars, hostile_array),
                    block_rows=(st.none(), hostile))
    outcome(mf.phase_diagram, act, v["weight_vars"], v["bias_vars"], block_rows=v["block_rows"], names=names,
            check=_pd_check, inf_ok=("xi_q", "xi_c", "xi_grad"), nan_ok=("critical_weight_vars",))


@budget
@given(st.data())
def test_critical_line(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, bias_vars=(inc_bvars, hostile_array),
                    offsets=(st.sampled_from([(), (0.01,), (0.001, 0.1)]), st.one_of(hostile, st.just([-0.1]))))

    def check(cl):
        ge(cl.weight_vars, 0.0, what="critical weight_var")
        ge(cl.cstar, 0.0, what="c*")
        le(cl.cstar, 1.0, what="c*")
    outcome(mf.critical_line, act, v["bias_vars"], offsets=v["offsets"], names=names, check=check,
            inf_ok=("xi_c",))


@budget
@given(st.data())
def test_depth_scale_curve(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, weight_vars=(inc_wvars, hostile_array), bias_var=st.floats(0.0, 0.5))
    outcome(mf.depth_scale_curve, act, v["weight_vars"], v["bias_var"], names=names,
            inf_ok=("xi_q", "xi_c", "xi_grad"), nan_ok=("critical_weight_var",),
            check=lambda c: (ge(c.qstar, v["bias_var"], what="q*"), le(c.cstar, 1.0, what="c*")))


@budget
@given(st.data())
def test_map_dynamics(data):
    act = data.draw(activation, label="activation")
    v, names = draw(data, weight_vars=(inc_wvars, hostile_array), bias_var=st.floats(0.0, 0.5),
                    depth=(st.integers(2, 5), hostile), q0=(st.just((0.5, 1.5)), hostile_array),
                    c0=(st.just((0.0, 0.9)), st.one_of(hostile_array, st.just((1.5,)))),
                    q_max=(st.none(), hostile), n_grid=(st.integers(3, 20), hostile))

    def check(md):
        le(np.abs(fin(md.c_layers)), 1.0, 1e-10, what="|c^l|")
    outcome(mf.map_dynamics, act, v.pop("weight_vars"), v.pop("bias_var"), **v, names=names, check=check)


# ----------------------------------------------------------------------------------------------------------------
# activations

@budget
@given(st.data())
def test_get_activation_params(data):
    name = data.draw(st.sampled_from(["leaky_relu", "elu", "tanh"]), label="spec")
    v, names = draw(data, slope=(st.floats(0.0, 1.0), hostile), alpha=(st.floats(0.1, 2.0), hostile))
    params = {"leaky_relu": {"slope": v["slope"]}, "elu": {"alpha": v["alpha"]}, "tanh": {}}[name]
    names = [n for n in names if n in params]
    act = outcome(mf.get_activation, name, **params, names=names)
    if act is not None:
        outcome(mf.fixed_point, act, 1.5, 0.05, names=[], inf_ok=("xi_q", "xi_c", "xi_grad"),
                check=_fp_check(name, 1.5, 0.05))


_PHIS = {
    "tanh": lambda x: math.tanh(x),
    "nan": lambda x: math.nan,
    "inf": lambda x: math.inf,
    "nan_far": lambda x: math.nan if abs(x) > 3.0 else math.tanh(x),
    "huge": lambda x: 1e300 * x,
}


_WARMED = set()


def _warm_custom(act):
    key = (act.evaluator, act.kinks)
    if key not in _WARMED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fn, args in ((mf.fixed_point, (act, 1.5, 0.05)), (mf.length_map, (act, 1.0, 1.5, 0.05))):
                try:
                    fn(*args)
                except (ValueError, TypeError):
                    pass
        _WARMED.add(key)


@budget
@given(st.data())
def test_custom_activation(data):
    kind = data.draw(st.sampled_from(sorted(_PHIS)), label="phi")
    v, names = draw(data, scale=(st.floats(0.3, 3.0), hostile), kinks=(st.just(()), st.one_of(hostile, st.just(
        [math.nan]))))
    if kind != "tanh":
        names = names + ["phi"]
    act = outcome(mf.custom_activation, f"c_{kind}", _PHIS[kind], scale=v["scale"], kinks=v["kinks"], names=names)
    # a custom activation compiles the kernels for itself on first use (a minute or more on a slow machine; reused
    # for the same functions afterwards): the calls below run only in the thorough hunt, after one untimed warm-up
    if act is not None and THOROUGH:
        _warm_custom(act)
        outcome(mf.fixed_point, act, 1.5, 0.05, names=["phi", "activation"] if kind != "tanh" else [],
                inf_ok=("xi_q", "xi_c", "xi_grad"))
        outcome(mf.length_map, act, 1.0, 1.5, 0.05, names=["phi", "activation"] if kind != "tanh" else [])


# ----------------------------------------------------------------------------------------------------------------
# deep linear networks

@budget
@given(st.data())
def test_meijer_g(data):
    v, names = draw(data, b=(st.lists(st.floats(-0.4, 5.0), min_size=1, max_size=3), hostile_array),
                    x=(st.floats(1e-3, 1e3), hostile))
    fn = data.draw(st.sampled_from([mf.log_meijer_g, mf.meijer_g]), label="function")
    outcome(fn, v["b"], v["x"], names=names, check=(lambda g: ge(g, 0.0, what="G")) if fn is mf.meijer_g else None)


@budget
@given(st.data())
def test_deep_linear_prior(data):
    v, names = draw(data, depth=(st.integers(0, 3), hostile), width=(st.integers(1, 50), hostile),
                    weight_var=st.floats(0.1, 3.0), input_norm=st.floats(0.1, 3.0))

    def check(r):
        ge(r.variance, 0.0, what="variance")
        ge(r.excess_kurtosis, 0.0, what="excess kurtosis")
    outcome(mf.deep_linear_prior, **v, names=names, check=check)


@budget
@given(st.data())
def test_deep_linear_prior_density(data):
    v, names = draw(data, f=(st.floats(-5.0, 5.0), hostile), depth=(st.integers(0, 3), hostile),
                    width=(st.integers(2, 50), hostile), weight_var=st.floats(0.1, 3.0))
    outcome(mf.deep_linear_prior_density, v["f"], v["depth"], v["width"], v["weight_var"], names=names,
            check=lambda p: ge(p, 0.0, what="density"))


@budget
@given(st.data())
def test_hz_saddle_point_bpkr_u0(data):
    v, names = draw(data, alpha=st.floats(0.01, 10.0), ratio=st.floats(0.01, 100.0),
                    depth=(st.integers(0, 4), hostile))
    z = outcome(mf.hz_saddle_point, v["alpha"], v["ratio"], v["depth"], names=names)
    if z is not None and not names:
        a, r, L = v["alpha"], v["ratio"], v["depth"]
        # the root lies where both factors are positive: 1 + z/a > 0 always, 1 + z > 0 only with hidden layers
        # (depth 0 has no (1 + z)^L factor: z = a (r - 1) may reach -1 and below)
        assert z > (max(-a, -1.0) if L > 0 else -a)
        np.testing.assert_allclose((1 + z / a) * (1 + z) ** L, r, rtol=1e-8)
    v2, names2 = draw(data, r0=st.floats(0.01, 100.0), weight_var=st.floats(0.1, 3.0))
    # bpkr_u0 needs a hidden layer (depth >= 1); (a hostile array depth made "== 0" itself raise in the test)
    out_of_range = ["depth"] if isinstance(v["depth"], int) and v["depth"] == 0 else []
    outcome(mf.bpkr_u0, v["alpha"], v2["r0"], v["depth"], v2["weight_var"], names=names + names2 + out_of_range,
            check=lambda u: ge(u, 0.0, what="u0"))


@budget
@given(st.data())
def test_deep_linear_posteriors(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 100), label="seed"))
    X = rng.standard_normal((3, 6))
    y = rng.standard_normal(3)
    v, names = draw(data, X=(st.just(X), hostile_array), y=(st.just(y), hostile), depth=(st.integers(0, 2), hostile),
                    width=(st.integers(4, 32), hostile), weight_var=st.floats(0.2, 2.0),
                    temperature=st.floats(0.0, 1.0), X_test=(st.just(X[:2]), hostile_array))
    fn = data.draw(st.sampled_from([mf.bpkr, mf.deep_linear_posterior, mf.nngp_linear_posterior]), label="function")
    if fn is mf.nngp_linear_posterior:
        v.pop("width")
        names = [n for n in names if n != "width"]

    def check(r):
        if r.variance is not None:
            ge(r.variance, 0.0, what="predictive variance")
    outcome(fn, **v, names=names, check=check, nan_ok=("z_star", "r0"))


# ----------------------------------------------------------------------------------------------------------------
# regression cases of the thorough run (MEANFIELD_HYPOTHESIS=thorough, 100 examples per test), each exact


def test_thorough_run_regressions_forward_backward():
    with pytest.raises(ValueError, match="weight_var, bias_var must broadcast"):
        mf.cstar("linear", [1.0, 2.0], [])
    # sin at weight_var 9e102: chi_1 ~ 4.5e102 per layer, so q-tilde overflows at the input end -- with a warning
    with pytest.warns(mf.DivergenceWarning, match="q-tilde exceeds the float64 range"):
        r = mf.backward(mf.Network("sin", depth=3, weight_var=8.958978968711217e102, bias_var=0.0))
    assert np.isinf(r.qtilde1[0]) and r.qtilde1[-1] == 1.0


def test_thorough_run_regressions_inputs():
    # a bare number is one kink; E[u^2] at q = 0 is 0 exactly
    assert mf.gaussian_expectation(lambda u: u ** 2, 0.0, kinks=0.0) == 0.0
    with pytest.raises(TypeError, match="kinks"):
        mf.gaussian_expectation(lambda u: u ** 2, 1.0, kinks="a")
    net = mf.Network("linear", depth=1, weight_var=1.0, bias_var=0.0)
    with pytest.raises(TypeError, match="^x must"):
        mf.nngp_diagonal(net, [[1.0, 2.0], [1.0]])
    with pytest.raises(TypeError, match="^x1 must"):
        mf.kernels(net, [[1.0, 2.0], [1.0]])


def test_thorough_run_regressions_deep_linear():
    # no hidden layer: nothing to renormalize (the formula would give u_0 = 1 - 2 (1 - 0.25) = -0.5)
    with pytest.raises(ValueError, match="depth"):
        mf.bpkr_u0(2.0, 0.25, 0)
    with pytest.raises(ValueError, match="weight_var"):
        mf.bpkr_u0(1.0, 1.0, 3, 1e200)      # r0 / weight_var^3 = 1e-600 is below the float range
    # depth 1023 at weight_var 3: sigma^(2L) = 3^1024 overflows (OverflowError from ** before); the variance is inf
    # with a DivergenceWarning, and the density, computed in logs, is finite: log p(0) = log G(0) - log(pi c)/2 - ...
    with pytest.warns(mf.DivergenceWarning, match="variance exceeds the float64 range"):
        r = mf.deep_linear_prior(1023, 50, 3.0)
    assert np.isinf(r.variance) and r.excess_kurtosis > 0
    # weight_var 1e200 at depth 3 (1e200 ** 4 raised OverflowError before): the output scales by weight_var^2, so
    # log p(f; 1e200) = log p(f / 1e400; 1) - log(1e400), and f / 1e400 is 0 to every digit of p(.; 1)
    lp = mf.deep_linear_prior_density(0.5, 3, 50, 1e200, log=True)
    ref = mf.deep_linear_prior_density(0.0, 3, 50, 1.0, log=True) - 400 * np.log(10.0)
    assert lp == pytest.approx(ref, rel=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# regression cases of the second thorough run (200 random examples per test) and of its closing note


def _sin_coefficients(q, n):
    """sin's exact normalised Hermite coefficients at variance q (independent of the quadrature): by Stein's identity
    E[f(z) He_k(z)] = E[f^(k)(z)], and for f(z) = sin(s z), s = sqrt(q), E[f^(k)(z)] = s^k e^{-q/2} sin(k pi / 2), so
    a_k = e^{-q/2} q^{k/2} sin(k pi/2) / sqrt(k!) (in logs: q^k / k! overflows); a_k^2 is the Poisson(q) law on odd k
    times e^{-q} sinh(q) / E[sin^2] = 1."""
    from scipy.special import gammaln
    k = np.arange(n)
    return np.exp(-q / 2 + k / 2 * np.log(q) - gammaln(k + 1.0) / 2) * np.round(np.sin(k * np.pi / 2))


def test_thorough_run_sin_spectrum_beyond_the_table():
    from scipy.stats import poisson
    from meanfield.activations import get_activation
    from meanfield.gaussian import hermite_table
    # below the bound's reach the table is computed as before and agrees with the exact spectrum: a_k to 1e-15
    # absolute (the composite rule's accuracy, |psi_k| <= 1 and sum |w| = O(1)), and it keeps as many terms as the
    # Poisson(q) tail needs: P(N >= K) <= rtol (on odd k, relative to E = (1 - e^{-2q})/2), K the first such index
    a = mf.hermite_coefficients("sin", 50.0, rtol=1e-12)
    ref = _sin_coefficients(50.0, 400)       # Poisson(50) beyond k = 400: below 1e-150
    ref, exact_tail = ref[:a.size], np.cumsum((ref * ref)[::-1])[::-1] / ((1 - math.exp(-100.0)) / 2)
    # error analysis: the rule (~3e3 nodes at q = 50, panels of width 1/sqrt(q)) sums terms |w f psi_k sqrt(phi_N)|
    # of size <= 1e-2 whose rounding (~eps each, random signs) accumulates to ~sqrt(3e3) x 1e-2 x 1.1e-16 ~ 1e-16,
    # and the 16-point rule's truncation is ~1e-20 per panel; observed 4.4e-15 at |a_k| ~ 0.2 (the Hermite recurrence
    # to k ~ 100 adds ~k eps relative): 2e-14 absolute
    np.testing.assert_allclose(a, ref, rtol=0, atol=2e-14)
    assert a.size == int(np.argmax(exact_tail <= 1e-12))
    # sin(sqrt(q) z) at q = 1e8: the spectrum is Poisson(1e8), centred 1e8 terms beyond the 2048-term table. Before:
    # 23 s of composite rule (4.5e5 nodes x 2048 terms x 2), ending "converged" after one term (all computed a_k < 1e-16,
    # so the table's own tail looked negligible). Now: the Cauchy-Schwarz bound of gaussian._beyond_table (three 1-D
    # integrals) proves the tail from k = 1537 exceeds 2e-3 E; the exact tail there is P(Poisson(1e8) >= 1537) = 1
    assert poisson.sf(1536, 1e8) == 1.0
    with pytest.warns(RuntimeWarning, match="extends beyond the 2048-term table"):
        assert mf.mehler_terms("sin", 1e8) == 2048
    with pytest.raises(ValueError, match="^q: the Hermite spectrum of sin"):
        mf.hermite_coefficients("sin", 1e8)
    # the leading coefficients on request: all below e^{-q/2} q^{k/2}/sqrt(k!) ~ 0 to every digit
    np.testing.assert_allclose(mf.hermite_coefficients("sin", 1e8, n_terms=3), 0.0, atol=1e-13)
    # the bound's threshold: (1 - 1537/q)^2 E_1^2 / (E_0 (E_2 + E_1/q)) > 2e-3, i.e. q > ~1609 for sin; at q = 1700 the
    # exact relative tail from 1537 is P(Poisson(1700) >= 1537) ~ 1 - 3e-5 (odd and even k alike to 1e-16)
    assert poisson.sf(1536, 1700.0) > 0.99
    with pytest.warns(RuntimeWarning, match="extends beyond"):
        assert mf.mehler_terms("sin", 1700.0) == 2048
    # Parseval closure (the cause of the false convergence): at q = 2500 the computed a_k, k < 2048, hold a fraction
    # P(Poisson(2500) < 2048) ~ 1e-20 of E; hermite_table now reports the row as not converged, with the whole mass
    # E in the remainder
    act = get_activation("sin")
    A, R, E, conv, _ = hermite_table(act, np.array([2500.0]), False, 1e-3, rule="composite")
    assert poisson.cdf(2047, 2500.0) < 1e-15
    assert not conv and A.shape[1] == 2048
    np.testing.assert_allclose(R, E, rtol=1e-12)
    np.testing.assert_allclose(E, 0.5, rtol=1e-12)      # E[sin^2(u)] = (1 - e^{-2q})/2


def test_thorough_run_deep_linear_depth_and_many_layers():
    # depth 1e9 allocated 8 GB of widths (seconds, then MemoryError or "Maximum allowed dimension exceeded"); the
    # library's MAX_DEPTH bound applies to the deep linear functions too
    for call in (lambda d: mf.deep_linear_prior(d, 5), lambda d: mf.deep_linear_prior_density(0.5, d, 5),
                 lambda d: mf.hz_saddle_point(0.5, 2.0, d), lambda d: mf.bpkr_u0(0.5, 0.5, d),
                 lambda d: mf.deep_linear_posterior(np.eye(2), np.ones(2), d, 4)):
        for d in (10**9, 10**20, 10_001):
            with pytest.raises(ValueError, match=r"^depth must be an integer in \[[01], 10000\]"):
                call(d)
    # depth 1000 near the pole of the Meijer-G integrand (f -> 0 at a large scale c): the saddle quadrature summed
    # 1001 log-gammas on each of ~1e5 nodes (34 s); the 1000 equal widths are now one parameter of multiplicity 1000.
    # Independent route: for w = f^2/c -> 0, G^{L,0}_{0,L}(w | 0, b, ..., b) -> Gamma(b)^(L-1) (the residue at s = 0;
    # the next poles give relative corrections O(w) and O(w^b (log w)^(L-1)), here w = e^-1389, below 1e-600), so
    # log p(f) = (L-1) log Gamma(b) - (log pi + log c)/2 - (L-1) log Gamma(N/2), b = (N-1)/2, to the route's 1e-12
    from scipy.special import gammaln
    depth, width, wv = 1000, 50, 50.0
    log_c = (depth + 1) * (math.log(2.0) + math.log(wv)) - depth * math.log(width)
    ref = depth * (gammaln((width - 1) / 2) - gammaln(width / 2)) - 0.5 * (math.log(math.pi) + log_c)
    lp = mf.deep_linear_prior_density(1e-150, depth, width, wv, log=True)
    assert lp == pytest.approx(ref, rel=1e-12)


def test_thorough_run_qstar_subnormal_start():
    # linear, weight_var 5e-324, bias_var 0: V(q) = 5e-324 q < q for every q > 0, so q* = b / (1 - w) = 0 exactly.
    # The root test |V(q0) - q0| <= 8 eps max(scale, 1e-300) accepted the start q0 = w + b = 5e-324 (|F| = 5e-324
    # below the floor 1.8e-315): q* = 5e-324 was returned, not a fixed point (V(5e-324) = 0)
    assert mf.qstar("linear", 5e-324, 0.0) == 0.0
    assert mf.qstar("relu", 5e-324, 0.0) == 0.0         # V(q) = w q / 2: q* = 0 likewise
    # a subnormal fixed point that is one: w = 0.5, b = 5e-323 gives q* = b / (1 - w) = 1e-322 (V rounds to it)
    assert mf.qstar("linear", 0.5, 5e-323) == 1e-322


def test_thorough_run_erf_at_the_top_of_the_float_range():
    import mpmath as mp
    # q >= 2^1023: the power-of-two scale of the closed forms, 2^1024, overflowed to inf, the scaled covariance became
    # 0 and E[erf'(u) erf'(v)] = (4/pi) / (inf * 0) = nan, E[erf(u)^2] = 0 (for ~1), silently. Reference: Williams'
    # closed forms in mpmath at 700 digits, (2/pi) asin(2 quv / sqrt((1+2qu)(1+2qv))) and
    # (4/pi) / sqrt((1+2qu)(1+2qv) - 4 quv^2); float64 rounding of the scaled formulas, a few ulps: rtol 1e-14
    mp.mp.dps = 700          # (1 + 2q)^2 - 4 q^2 = 1 + 4q at q ~ 1e308 needs ~620 digits without cancellation
    big = 1.7976931348623157e308
    for qu, qv, quv in ((big, big, big), (big, big, big / 2), (1e308, big, -3e307), (9e307, 9e307, 9e307)):
        a, b, c = mp.mpf(qu), mp.mpf(qv), mp.mpf(quv)
        e_ref = 2 / mp.pi * mp.asin(2 * c / mp.sqrt((1 + 2 * a) * (1 + 2 * b)))
        d_ref = 4 / mp.pi / mp.sqrt((1 + 2 * a) * (1 + 2 * b) - 4 * c * c)
        assert mf.pair_expectation("erf", qu, qv, quv) == pytest.approx(float(e_ref), rel=1e-14)
        assert mf.pair_expectation("erf", qu, qv, quv, derivative=True) == pytest.approx(float(d_ref), rel=1e-14)
    # the forward sweep at bias_var = 1.8e308 (erf, depth 1): q1 = 1 + 1.8e308 rounds to 1.8e308 for both inputs
    # (q2 = bias_var alone: input_overlap 0), qhat1 = E[erf(u)^2] at that q, qdot1 = E[erf'(u)^2]; c = q2 / sqrt(q1 q1b)
    # is 1 here (q1 q1b overflowed: c = q2 / inf = 0 was returned)
    fr = mf.forward(mf.Network("erf", depth=1, weight_var=1.0, bias_var=big))
    np.testing.assert_array_equal(fr.c, 1.0)
    a = mp.mpf(big)
    np.testing.assert_allclose(fr.qhat1[1:], float(2 / mp.pi * mp.asin(2 * a / (1 + 2 * a))), rtol=1e-14)
    np.testing.assert_allclose(fr.qdot1, float(4 / mp.pi / mp.sqrt(1 + 4 * a)), rtol=1e-14)
    mp.mp.dps = 15


def test_thorough_run_forward_correlation_of_tiny_variances():
    # q1 q1b underflowing to 0 (both ~1e-200) gave c = 1 whatever q2: linear net, weight_var w, bias_var 0, inputs of
    # norms 1e-200 and 4e-200 with overlap 1e-200: q1 = w 1e-200, q1b = w 4e-200, q2 = w 1e-200, c = 1/2 exactly
    fr = mf.forward(mf.Network("linear", depth=1, weight_var=1.0, bias_var=0.0), input_norm=1e-200, input_norm2=4e-200,
                    input_overlap=1e-200)
    np.testing.assert_allclose(fr.c, 0.5, rtol=1e-15)


def test_thorough_run_hermite_coefficients_n_terms():
    # n_terms had no upper bound: 10**20 raised numba's TypingError (not a TypeError), 2**62 "array is too big",
    # 10**5 ran for minutes (the composite rule's node x term work grows like n_terms^1.5)
    for n in (10**20, 2**62, 10**5, 10_001):
        with pytest.raises(ValueError, match=r"^n_terms must be an integer in \[1, 10000\]"):
            mf.hermite_coefficients("tanh", 1.0, n_terms=n)
    # sin at q = 1e8 needs ~4.5e5 nodes (panels of the floor width 1e-3 over |z| <= 14): 1000 terms are 4.5e8
    # node-term products, beyond the 2e8 budget; 3 terms are not (and are 0 to every digit, see above)
    with pytest.raises(ValueError, match="^n_terms, q: 1000 coefficients"):
        mf.hermite_coefficients("sin", 1e8, n_terms=1000)
    # within the bound the coefficients are those of the exact spectrum (tanh's against the 1-D quadrature of
    # E[tanh(z) He_k(z)] / sqrt(k!) by the Gauss-Hermite rule of 400 nodes (scipy; the library's explicit n_terms use
    # the composite Gauss-Legendre rule): tanh is analytic in |Im z| < pi/2, so the rule errs by
    # ~exp(-(pi/2) sqrt(2 n)) ~ 1e-19 at n = 400, plus rounding ~1e-16 of the sqrt(k!)-scaled terms)
    from scipy.special import roots_hermitenorm
    z, w = roots_hermitenorm(400)
    w = w / math.sqrt(2 * math.pi)
    ref = [np.sum(w * np.tanh(z) * np.polynomial.hermite_e.hermeval(z, [0] * k + [1])) / math.sqrt(math.factorial(k))
           for k in range(21)]
    np.testing.assert_allclose(mf.hermite_coefficients("tanh", 1.0, n_terms=21), ref, rtol=0, atol=1e-14)


def test_thorough_run_regressions_argument_types():
    net = mf.Network("linear", depth=1, weight_var=1.0, bias_var=0.0)
    # an array as parameterization: "parameterization not in (...)" raised numpy's unnamed "truth value ... ambiguous"
    with pytest.raises(ValueError, match="^parameterization must be"):
        mf.kernels(net, np.zeros((1, 3)), parameterization=np.array([]))
    # an array input_norm: math.log raised "only 0-dimensional arrays can be converted", naming nothing
    with pytest.raises(TypeError, match="input_norm"):
        mf.deep_linear_prior(0, 1, 1.0, [1.0, 2.0])
    # b ~ 1e17 (log-gamma ~ 1e18: no digits left for the integrand's phase) fails at x = 1: the error named only x
    # b = -1.8e308: the saddle -min(b) + tiny rounds onto the pole (step h = 0: ZeroDivisionError)
    for b in (7.205759403792795e16, 3.484491437270411e41, 4.460149039706126e43, -1.7976931348623157e308):
        with pytest.raises(ValueError, match="^x, b: log"):
            mf.log_meijer_g(b, 1.0)


def test_thorough_run_critical_weight_var_at_the_largest_bias():
    # bias_var = 1.8e308 (tanh): g(q) = q - E[phi^2]/E[phi'^2] - bias_var rounds to 0 at q = bias_var (E/E' ~ 2.5e154
    # is below half an ulp of 1.8e308), the bisection midpoint (lo + hi)/2 overflowed to inf, and the 1-D rule at
    # q = inf never ended (the call ran for minutes). Independent route: on the critical line q* = bias_var +
    # E[phi^2]/E[phi'^2] and weight_var = 1/E[phi'^2]; for tanh at q ~ 1.8e308, E[phi'^2] = E[sech^4 u] ~
    # (4/3)/sqrt(2 pi q) (the sech^4 mass 4/3 under the density 1/sqrt(2 pi q) near 0, relative error O(1/q)), and
    # q* = bias_var to every digit (the root solver stops at a bracket of 4 eps relative: rtol 1e-15)
    big = 1.7976931348623157e308
    w, q = mf.critical_weight_var("tanh", big, return_qstar=True)
    assert q == pytest.approx(big, rel=1e-15)
    assert w == pytest.approx(math.sqrt(2 * math.pi) * math.sqrt(big) * 3 / 4, rel=1e-12)
