"""scaler_stats.py's StandardScaler attributes (the batched sums are checked against
scikit-learn in test_lockstep.py)."""
import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import StandardScaler

from sweeplib import scaler_stats


def test_constant_features_get_scale_one_as_scikit_learn_decides():
    """From scikit-learn's own mean and variance, the attributes are its own bit for bit (an
    all-zero column, constant ones, ordinary columns); a variance within the two-pass
    rounding bound (n eps var + (n eps mean)^2; here (200 eps)^2 ~ 2e-27) counts as none."""
    rng = np.random.default_rng(3)
    n = 200
    X = np.where(rng.random((n, 6)) < 0.4, rng.random((n, 6)) * 50, 0.0)
    X[:, 0] = 0.0
    X[:, 1] = 3.0
    X[:, 2] = 1e8
    X = X.astype(np.float32)                       # the probe fits float32 data
    ref = StandardScaler(with_mean=False).fit(sp.csr_matrix(X))
    got = scaler_stats._scaler_attributes(ref.mean_.astype(np.float32), ref.mean_,
                                          (ref.var_.astype(np.float32), 0), n)
    for attr in ("mean_", "var_", "scale_", "n_samples_seen_"):
        assert np.array_equal(got[attr], getattr(ref, attr)), attr
    assert got["scale_"][0] == got["scale_"][1] == got["scale_"][2] == 1.0
    assert np.all(got["scale_"][3:] != 1.0)
    constant = scaler_stats._constant_features(np.array([0.0, 1e-28, 1e-20, 1.0]),
                                               np.ones(4), np.float32(n))
    assert constant.tolist() == [True, True, False, False]
    scale = scaler_stats._scaler_attributes(np.ones(4), np.ones(4), (np.array(
        [0.0, 1e-28, 1e-20, 4.0], dtype=np.float32), 0), n)["scale_"]
    assert scale[:2].tolist() == [1.0, 1.0] and scale[3] == 2.0 and 0 < scale[2] < 1e-9
