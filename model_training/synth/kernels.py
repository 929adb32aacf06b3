"""Motion trajectories and the point-spread functions they integrate to.

Averaging N copies of a layer translated along a trajectory (exposure integration) is the
same linear operator as one correlation with a kernel made of the N bilinear splats of the
trajectory points: a bilinear warp by a sub-pixel shift *is* a 2x2 correlation. Building
the kernel once and filtering once with OpenCV (which switches to the DFT for large
kernels) is therefore exact and an order of magnitude faster than N warps; a test checks
the equivalence against explicit warped copies.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def line_trajectory(length: float, angle_deg: float, n: int | None = None) -> np.ndarray:
    """Points (x, y) along a straight segment of ``length`` px centred on the origin.

    Centring on the origin keeps the blurred object where the sharp one was (the
    exposure is symmetric about the mid-exposure instant), so the blur does not also
    shift content.
    """
    n = n or _steps_for(length)
    t = np.linspace(-0.5, 0.5, n)
    a = math.radians(angle_deg)
    return np.stack([t * length * math.cos(a), t * length * math.sin(a)], axis=1)


def bezier_trajectory(length: float, angle_deg: float, bend1: float, bend2: float, n: int | None = None) -> np.ndarray:
    """Points along a cubic Bezier whose chord is ``length`` px at ``angle_deg``.

    ``bend1`` and ``bend2`` push the inner control points sideways by that fraction of
    the chord; equal signs give a C-shaped arc, opposite signs an S-shaped path. The
    curve is sampled uniformly in time, so its speed varies along it as a real hand or
    object does.
    """
    a = math.radians(angle_deg)
    along = np.array([math.cos(a), math.sin(a)])
    normal = np.array([-along[1], along[0]])
    p0 = np.zeros(2)
    p3 = along * length
    p1 = along * length / 3 + normal * bend1 * length
    p2 = along * 2 * length / 3 + normal * bend2 * length
    arc = length * (1 + abs(bend1) + abs(bend2))
    n = n or _steps_for(arc)
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    return pts - pts.mean(axis=0)


def random_walk_trajectory(extent: float, n_vertices: int, momentum: float, seed: int) -> np.ndarray:
    """A jittery camera-shake path (in the manner of Boracchi & Foi 2012) scaled to ``extent``.

    The velocity keeps ``momentum`` of its previous value and takes a random kick each
    step, so low momentum gives a tangled shake and high momentum a drifting stroke. The
    path is then rescaled so its effective length (see :func:`effective_extent`) equals
    ``extent``; the seed is an explicit parameter so the same parameters always draw the
    same path.
    """
    rng = np.random.default_rng(seed)
    v = rng.normal(size=2)
    v /= np.linalg.norm(v) + 1e-12
    pts = [np.zeros(2)]
    for _ in range(max(n_vertices, 2) - 1):
        kick = rng.normal(size=2)
        v = momentum * v + (1 - momentum) * kick
        pts.append(pts[-1] + v)
    path = np.asarray(pts)
    path = _densify(path)
    path -= path.mean(axis=0)
    spread = _spread(path)
    if spread < 1e-9:
        return line_trajectory(extent, 0.0)
    path *= extent / spread
    return _densify(path)


def shake_trajectory(
    extent: float,
    n_steps: int,
    seed: int,
    *,
    anxiety: float,
    jitter: float,
    centripetal: float,
    jerk_prob: float,
    exposure: float,
) -> np.ndarray:
    """A hand-held camera path after Boracchi & Foi (2012), scaled to ``extent``.

    The camera moves at a steady speed for ``n_steps`` time steps; each step its velocity
    gets a Gaussian push (``jitter``), a pull back toward where it started (``centripetal``,
    the hand's inertia toward the framing) and, with probability ``jerk_prob``, an abrupt
    reversal (impulsive shake); ``anxiety`` scales all three, so a calm hand drifts almost
    straight and a nervous one tangles. The shutter is open for only the first ``exposure``
    fraction of the path, as a shorter exposure of the same shake sees less of it. The
    kept path is rescaled so its effective length (see :func:`effective_extent`) equals
    ``extent``; the seed is a parameter so the same parameters always draw the same path.
    """
    rng = np.random.default_rng(seed)
    n = max(n_steps, 3)
    theta = rng.uniform(0.0, 2 * math.pi)
    v = np.array([math.cos(theta), math.sin(theta)])
    x = np.zeros((n, 2))
    for t in range(n - 1):
        jerk = np.zeros(2)
        if rng.random() < jerk_prob * anxiety:
            a = math.pi + rng.uniform(-0.5, 0.5)
            jerk = 2 * np.array([v[0] * math.cos(a) - v[1] * math.sin(a), v[0] * math.sin(a) + v[1] * math.cos(a)])
        v = v + jerk + anxiety * (jitter * rng.normal(size=2) - centripetal * x[t])
        v /= np.linalg.norm(v) + 1e-12
        x[t + 1] = x[t] + v
    keep = min(n, max(2, int(round(exposure * n))))
    return scale_to_extent(_densify(x[:keep]), extent)


def scale_to_extent(points: np.ndarray, extent: float) -> np.ndarray:
    """Centre a time-sampled path and rescale it so its effective length is ``extent``.

    A path with no spread (every point the same) becomes a straight segment of that
    length, so a degenerate draw still blurs by what was asked.
    """
    path = points - points.mean(axis=0)
    spread = _spread(path)
    if spread < 1e-9:
        return line_trajectory(extent, 0.0)
    return _densify(path * (extent / spread))


def add_motion(path: np.ndarray, displacement: tuple[float, float]) -> np.ndarray:
    """The path of an object moving by ``displacement`` (x, y) px while the camera follows ``path``.

    The image of a moving object shifts by the camera's motion plus its own at each
    instant, so the two are added sample by sample (``path`` is uniform in time); the
    object's own motion is taken as uniform and centred on mid-exposure.
    """
    t = np.linspace(-0.5, 0.5, len(path))[:, None]
    return _densify(path + t * np.asarray(displacement, np.float64)[None, :])


def kernel_from_trajectory(points: np.ndarray) -> np.ndarray:
    """Correlation kernel equal to averaging copies translated by each of ``points``.

    A copy translated by p puts the content of x at x + p, so the output at x reads the
    input at x - p: the correlation weight goes at offset -p (splatted bilinearly).
    """
    reach = int(math.ceil(np.abs(points).max(initial=0.0))) + 1
    size = 2 * reach + 1
    k = np.zeros((size, size), np.float64)
    xs = -points[:, 0] + reach
    ys = -points[:, 1] + reach
    x0 = np.floor(xs).astype(int)
    y0 = np.floor(ys).astype(int)
    fx = xs - x0
    fy = ys - y0
    w = 1.0 / len(points)
    np.add.at(k, (y0, x0), w * (1 - fx) * (1 - fy))
    np.add.at(k, (y0, x0 + 1), w * fx * (1 - fy))
    np.add.at(k, (y0 + 1, x0), w * (1 - fx) * fy)
    np.add.at(k, (y0 + 1, x0 + 1), w * fx * fy)
    return (k / k.sum()).astype(np.float32)


def effective_extent(kernel: np.ndarray) -> float:
    """Length of the uniform line with the same spread as ``kernel`` (sqrt(12·λmax)).

    One number that means "how many pixels does this blur smear" for every PSF shape:
    exactly the length for a straight line, and comparable for curves and shakes, so the
    intensity target is consistent across blur types.
    """
    ys, xs = np.mgrid[0 : kernel.shape[0], 0 : kernel.shape[1]]
    w = kernel.astype(np.float64)
    w = w / w.sum()
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    return _spread(pts, w.ravel())


def filter_layer(layer: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate every channel of a float32 layer with ``kernel``, reflecting at the border."""
    return cv2.filter2D(layer, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT_101)


def _spread(points: np.ndarray, weights: np.ndarray | None = None) -> float:
    if weights is None:
        weights = np.full(len(points), 1.0 / len(points))
    mean = (points * weights[:, None]).sum(axis=0)
    d = points - mean
    cov = (d * weights[:, None]).T @ d
    lam = float(np.linalg.eigvalsh(cov)[-1])
    return math.sqrt(12.0 * max(lam, 0.0))


def _steps_for(length: float) -> int:
    """Enough exposure samples that consecutive splats are under half a pixel apart."""
    return max(8, int(math.ceil(abs(length) * 3)) + 1)


def _densify(path: np.ndarray) -> np.ndarray:
    """Subdivide every segment of a time-sampled polyline into the same number of points.

    Equal subdivision keeps the samples uniform in *time*, so the slow parts of a shake
    (where the camera dwells) still weigh more in the PSF, while no two consecutive
    points are more than a third of a pixel apart.
    """
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    longest = float(seg.max(initial=0.0))
    if longest <= 0:
        return path
    k = max(1, int(math.ceil(longest * 3)))
    t = np.linspace(0.0, 1.0, k, endpoint=False)[None, :, None]
    inner = path[:-1, None, :] + t * (path[1:, None, :] - path[:-1, None, :])
    return np.concatenate([inner.reshape(-1, 2), path[-1:]], axis=0)
