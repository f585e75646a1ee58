r"""Checks of the Fisher-information results along training and with normalization (Karakida & Osawa 2020; Karakida,
Akaho & Amari 2019/2021; Lewkowycz et al. 2020): natural-gradient training curves, cross-entropy dynamics, the model
and empirical FIM along training, batch / layer normalization and the catapult phase of gradient descent.

Each ``check_<name>(ctx) -> list of records`` is registered in :mod:`meanfield.validation.capabilities` and follows
:mod:`meanfield.validation.checks` (``ctx`` a :class:`~meanfield.validation.checks.CheckContext`). The trajectory
predictions of the library are *conditional* on the network's own initial outputs ``f_0`` (the NTK-regime dynamics
are a deterministic map of ``f_0``): for every network ``s`` the theory is evaluated at its ``f_0``, and the row
compares the mean of the simulated values with the mean of those conditional theory values (``theory`` column),
so the O(1) randomness of ``f_0`` cancels exactly in the deviation ``sim_s - theory_s`` and what remains is the
finite-width effect: the NTK's ``O(M^{-1/2})`` fluctuation and its motion during training (single network ``-1/2``,
ensemble bias ``-1``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..network import Network
from .checks import CheckContext, _n_params, _rec
from .networks import layer_widths, sample_ensemble

__all__ = ["check_natural_gradient", "check_cross_entropy_dynamics", "check_fisher_training",
           "check_normalization", "check_catapult"]

_COND = "-1 (bias O(1/M)); single network -1/2 (theory conditional on each network's f_0)"


def _conditional_record(cap, quantity, width, theory_per_network, simulated, source):
    """Row comparing ``simulated`` (S,) with the per-network conditional theory (S,): theory column the mean of the
    theory values, samples ``mean(theory) + (simulated - theory)`` (module docstring)."""
    th = np.asarray(theory_per_network, dtype=np.float64)
    sim = np.asarray(simulated, dtype=np.float64)
    centre = float(th.mean())
    return _rec(cap, quantity, width, centre, source, centre + (sim - th), _COND)


def _ensembles(ctx, net, width, n_seeds, n_outputs, parameterization="ntk"):
    """Chunks of the ensemble (memory budget ``ctx.chunk_bytes``)."""
    P = _n_params(layer_widths(net, width, n_outputs))
    for start, n in ctx.chunks(n_seeds, P):
        yield sample_ensemble(net, width, n, n_outputs=n_outputs, parameterization=parameterization, seed=ctx.seed,
                              first_index=start, device=ctx.device, dtype=ctx.dtype)


def _tensor(a, ens):
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=ens.dtype, device=ens.device)


# --------------------------------------------------------------------------------------------------------------------
_NGD_NET = Network("tanh", depth=2, weight_var=1.5, bias_var=0.1)
_NGD_STEPS = 5


def check_natural_gradient(ctx: CheckContext) -> list:
    r"""Natural-gradient training curves (Karakida & Osawa 2020): wide networks (NTK parameterization, tanh, one
    output, ``N = 6`` inputs, MSE) trained by :func:`meanfield.validation.train_ngd` with gradient descent, exact NGD
    and its layer-wise (block-diagonal) and K-FAC approximations (pseudo-inverse, no damping), against
    :func:`meanfield.natural_gradient.ngd_dynamics` (``f_t - y = (I - eta Theta_bar)^t (f_0 - y)``, isotropic
    ``Theta_bar = alpha I`` for the three NGD methods): the loss ratio ``L_t / L_0`` after 1 and 5 steps, conditional on
    each network's ``f_0``. Step sizes ``eta alpha = 1/2`` (NGD: the error halves per step) and ``eta = 1`` for GD.
    Unit-wise NGD with the width-scaled damping ``rho = 0.1 / M`` (the regime finite networks follow; its kernel is
    not isotropic, a quasi-Monte Carlo integral whose standard error is far below the rows' SE) at ``eta = 1/2``
    over the kernel's mean diagonal.
    """
    from ..natural_gradient import ngd_dynamics, ngd_kernel
    from .natural_gradient import train_ngd

    net, N = _NGD_NET, 6
    widths, S = ctx.ladder(((32, 64, 128), 8), ((64, 128, 256, 512), 24), ((256, 512, 1024, 2048, 4096), 64))
    y = np.random.default_rng(ctx.seed + 2).standard_normal((N, 1))
    L = net.depth + 1
    eta = {"gd": 1.0, "full": 0.5, "block_diagonal": 0.5 / L, "kfac": 0.5 / (N * (L - 1) + 1), "unit_wise": None}
    src = "meanfield.natural_gradient.ngd_dynamics"
    out = []
    for M in widths:
        x = np.random.default_rng(ctx.seed + 1).standard_normal((N, layer_widths(net, M, 1)[0]))
        for method, lr in eta.items():
            rho = 0.1 / M if method == "unit_wise" else 0.0
            kern = ngd_kernel(net, x, method=method, damping=rho, width=M)
            if lr is None:
                lr = 0.5 / float(np.mean(np.diagonal(kern.train)))
            sim: dict = {1: [], _NGD_STEPS: []}
            th: dict = {1: [], _NGD_STEPS: []}
            for ens in _ensembles(ctx, net, M, S, 1):
                run = train_ngd(ens, _tensor(x, ens), _tensor(y, ens), lr, _NGD_STEPS, method=method, damping=rho)
                for s in range(run.train.shape[0]):
                    d = ngd_dynamics(net, x, y, lr, _NGD_STEPS, method=method, damping=rho, width=M,
                                     f0_train=run.train[s, 0], kernel=kern)
                    for k in sim:
                        sim[k].append(run.loss[s, k] / run.loss[s, 0])
                        th[k].append(d.loss[k] / d.loss[0])
            for k in sim:
                name = "unit_wise, rho = 0.1/M" if method == "unit_wise" else method
                out.append(_conditional_record("natural_gradient", f"L_t/L_0 ({name}), t = {k}", M, th[k], sim[k],
                                               src))
    return out


# --------------------------------------------------------------------------------------------------------------------
_TRAIN_N, _TRAIN_D = 8, 64


def _training_setup(ctx, width, n_outputs, loss):
    """The tanh network of the training checks (input dimension fixed at 64), its NTK on the inputs, and targets."""
    from ..kernels import ntk_kernel

    net = Network("tanh", depth=2, weight_var=1.5, bias_var=0.1, width_ratios=[_TRAIN_D / width, 1, 1])
    x = np.random.default_rng(ctx.seed + 1).standard_normal((_TRAIN_N, _TRAIN_D))
    rng = np.random.default_rng(ctx.seed + 2)
    y = (rng.standard_normal((_TRAIN_N, n_outputs)) if loss == "mse"
         else np.eye(n_outputs)[rng.integers(0, n_outputs, _TRAIN_N)])
    return net, x, y, np.asarray(ntk_kernel(net, x))


def check_cross_entropy_dynamics(ctx: CheckContext) -> list:
    r"""Softmax cross-entropy training (Karakida, Akaho & Amari 2021, Fig. 5): wide tanh networks (NTK
    parameterization, ``C = 3`` classes, ``N = 8`` inputs) trained by full-batch gradient descent
    (:func:`meanfield.validation.train_gd_cross_entropy`, ``eta = 4``) against the NTK-regime logit dynamics
    :func:`meanfield.softmax_dynamics.cross_entropy_ntk_dynamics` (``discrete=True``, conditional on each network's
    initial logits): the loss and the softmax FIM's largest eigenvalue (recomputed from the softmax outputs) after 20
    and 80 steps.
    """
    from ..softmax_dynamics import cross_entropy_ntk_dynamics
    from .softmax_training import train_gd_cross_entropy

    C, eta, steps = 3, 4.0, (0, 20, 80)
    widths, S = ctx.ladder(((32, 64, 128), 6), ((64, 128, 256, 512), 16), ((256, 512, 1024, 2048, 4096), 64))
    src = "meanfield.softmax_dynamics.cross_entropy_ntk_dynamics"
    out = []
    for M in widths:
        net, x, y, th = _training_setup(ctx, M, C, "cross_entropy")
        rows: dict = {(q, k): ([], []) for q in ("loss", "lambda_max(F_softmax)") for k in steps[1:]}
        for ens in _ensembles(ctx, net, M, S, C):
            run = train_gd_cross_entropy(ens, _tensor(x, ens), _tensor(y, ens), eta, steps[-1],
                                         record_steps=list(steps))
            for s in range(run.logits.shape[0]):
                d = cross_entropy_ntk_dynamics(th, y, list(steps), eta, run.logits[s, 0], discrete=True)
                for i, k in enumerate(steps[1:], start=1):
                    rows["loss", k][0].append(d.loss[i])
                    rows["loss", k][1].append(run.loss[s, i])
                    rows["lambda_max(F_softmax)", k][0].append(d.fisher_lambda_max[i])
                    rows["lambda_max(F_softmax)", k][1].append(run.fisher_lambda_max[s, i])
        for (q, k), (t, m) in rows.items():
            out.append(_conditional_record("cross_entropy_dynamics", f"{q}, t = {k}", M, t, m, src))
    return out


def check_fisher_training(ctx: CheckContext) -> list:
    r"""Model FIM against empirical FIM along training (seed: Karakida's thesis; Kunstner et al. 2019): wide tanh
    networks (NTK parameterization, ``N = 8`` inputs) trained by gradient descent on the MSE (one output, ``eta = 1``)
    and the cross-entropy (three classes, ``eta = 4``) loss, tracked by :func:`meanfield.validation.track_fisher`
    against :func:`meanfield.fisher_dynamics.fisher_along_training` (conditional on each network's ``f_0``): the
    largest eigenvalue of the model FIM and of the empirical FIM after 10 and 40 steps.
    """
    from ..fisher_dynamics import fisher_along_training
    from .fisher_tracking import track_fisher

    steps = (0, 10, 40)
    widths, S = ctx.ladder(((32, 64, 128), 6), ((64, 128, 256, 512), 16), ((256, 512, 1024, 2048, 4096), 64))
    src = "meanfield.fisher_dynamics.fisher_along_training"
    out = []
    for loss, C, eta in (("mse", 1, 1.0), ("cross_entropy", 3, 4.0)):
        for M in widths:
            net, x, y, th = _training_setup(ctx, M, C, loss)
            rows: dict = {(q, k): ([], []) for q in ("model", "empirical") for k in steps[1:]}
            for ens in _ensembles(ctx, net, M, S, C):
                tr = track_fisher(ens, _tensor(x, ens), _tensor(y, ens), eta, steps[-1], loss=loss,
                                  record_steps=list(steps))
                for s in range(tr.outputs.shape[0]):
                    d = fisher_along_training(th, y, list(steps), eta, tr.outputs[s, 0], loss=loss)
                    for i, k in enumerate(steps[1:], start=1):
                        rows["model", k][0].append(d.model_eigenvalues[i, -1])
                        rows["model", k][1].append(tr.model_eigenvalues[s, i, -1])
                        rows["empirical", k][0].append(d.empirical_eigenvalues[i, -1])
                        rows["empirical", k][1].append(tr.empirical_eigenvalues[s, i, -1])
            for (q, k), (t, m) in rows.items():
                out.append(_conditional_record("fisher_training", f"lambda_max({q} FIM, {loss}), t = {k}", M, t, m,
                                               src))
    return out


# --------------------------------------------------------------------------------------------------------------------
_NORM_NET = Network("relu", depth=3, weight_var=2.0, bias_var=0.1)


def check_normalization(ctx: CheckContext) -> list:
    r"""Batch and layer normalization in the hidden layers (Karakida, Akaho & Amari 2019): for random relu networks
    (standard parameterization, ``T = 8`` Gaussian inputs, ``C = 2`` outputs; FIM from the exact Jacobian of the
    batched forward pass, :func:`meanfield.validation.normalization_sim.normalized_fisher_spectrum`):

    * layer norm: ``lambda_max / M`` and the mean eigenvalue ``M m_lambda`` against
      :func:`meanfield.normalization.layer_norm_fisher_statistics` (``lambda_max = O(M)``: LN does not remove the
      pathological sharpness);
    * batch norm: the exact per-network lower bound ``(1 + sum_i mu_i^2) / M`` (``mu_i`` the batch means of the last
      hidden layer) against its large-width value :func:`meanfield.normalization.batch_norm_lambda_max_bound`
      (``1/M + alpha E[mu^2]``, a Monte-Carlo expectation whose standard error enters the row's SE).

    One network at a time on the CPU (``torch.func.jacrev`` of the batched forward pass: batch normalization couples
    the samples), whatever the run's device.
    """
    from ..normalization import batch_norm_lambda_max_bound, layer_norm_fisher_statistics
    from .normalization_sim import normalized_fisher_spectrum

    net, T, C = _NORM_NET, 8, 2
    widths, S = ctx.ladder(((32, 64, 128), 4), ((64, 128, 256, 512), 16), ((256, 512, 1024, 2048), 48))
    out = []
    for M in widths:
        ln = layer_norm_fisher_statistics(net, M, T, C)
        bn = batch_norm_lambda_max_bound(net, M, T, C, seed=ctx.seed)
        lam, mean, bound = [], [], []
        for s in range(S):
            a = normalized_fisher_spectrum(net, M, T, C, normalization="layer", seed=ctx.seed + s)
            b = normalized_fisher_spectrum(net, M, T, C, normalization="batch", seed=ctx.seed + s)
            lam.append(a.lambda_max / M)
            mean.append(a.mean_eigenvalue * M)
            bound.append(b.batch_mean_bound / M)
        src = "meanfield.normalization.layer_norm_fisher_statistics"
        out.append(_rec("normalization", "lambda_max / M (layer norm)", M, ln.lambda_max / M, src, lam,
                        "-1 (bias O(1/M)); single network -1/2"))
        out.append(_rec("normalization", "M m_lambda (layer norm)", M, ln.mean_eigenvalue * M, src, mean,
                        "-1 (bias O(1/M)); single network -1/2"))
        out.append(_rec("normalization", "(1 + sum mu_i^2) / M (batch norm bound)", M, bn.lambda_max_bound / M,
                        "meanfield.normalization.batch_norm_lambda_max_bound", bound,
                        "-1 (bias O(1/M)); single network -1/2",
                        theory_se=bn.last_hidden_width * bn.mean_square_batch_mean_stderr / M))
    return out


# --------------------------------------------------------------------------------------------------------------------
_CATAPULT_NET = Network("relu", depth=2, weight_var=2.0, bias_var=0.1)


def check_catapult(ctx: CheckContext) -> list:
    r"""Learning-rate phases of gradient descent (Karakida et al. 2019 sec. 4.1; Lewkowycz et al. 2020): relu networks
    (standard parameterization, ``T = 16`` inputs, targets ``N(0, 1)``) trained by full-batch gradient descent at
    ``eta = f * 2/lambda_max0`` (:func:`meanfield.validation.catapult.catapult_scan`, ``lambda_max0`` each network's
    own FIM eigenvalue), against :func:`meanfield.learning_rate.learning_rate_thresholds`:

    * ``2 / lambda_max0`` against ``eta_c`` (theory ``alpha M (kappa_1/T + (T-1)/T kappa_2)``);
    * the relative drift of the sharpness ``lambda_max(F)`` over a lazy run (``f = 0.5``): 0 at infinite width
      (the NTK does not move), ``O(M^{-1/2})`` at finite width;
    * the fraction of runs that stay lazy (the loss never doubles) at ``f = 0.75``: 1 in the linear theory;
    * at ``f = 1.25`` the linear dynamics are unstable, so a run that converges must end at a sharpness below
      ``2/eta`` (the catapult) or diverge: the fraction of runs that do, 1.
    """
    from .catapult import catapult_scan

    net = _CATAPULT_NET
    widths, S = ctx.ladder(((32, 64, 128), 6), ((64, 128, 256, 512), 16), ((256, 512, 1024, 2048), 48))
    src = "meanfield.learning_rate.learning_rate_thresholds"
    out = []
    for M in widths:
        scan = catapult_scan(net, M, [0.5, 0.75, 1.25], n_seeds=S, n_steps=100, seed=ctx.seed, device=ctx.device,
                             dtype=ctx.dtype)
        out.append(_rec("catapult", "eta_c = 2 / lambda_max0", M, scan.eta_critical_theory, src,
                        2.0 / np.asarray(scan.lambda_max0), "-1 (bias O(1/M)); single network -1/2"))
        drift = scan.sharpness[0, :, -1] / scan.sharpness[0, :, 0] - 1.0
        out.append(_rec("catapult", "lazy sharpness drift (f = 0.5)", M, 0.0, src, drift,
                        "single network -1/2 (NTK motion)"))
        out.append(_rec("catapult", "fraction lazy (f = 0.75)", M, 1.0, src,
                        (~scan.diverged[1] & ~scan.catapulted[1]).astype(float), "0 once every run agrees"))
        with np.errstate(invalid="ignore"):
            flat = scan.factors[2] * scan.sharpness[2, :, -1] / np.asarray(scan.lambda_max0) < 1.0
        out.append(_rec("catapult", "fraction ending with eta lambda_max < 2 or diverged (f = 1.25)", M, 1.0, src,
                        (scan.diverged[2] | flat).astype(float), "0 once every run agrees"))
    return out
