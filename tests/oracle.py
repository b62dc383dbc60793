"""The oracle: the paper's sums written out in plain NumPy, in float64.

Zhifei Zhang, "Derivation of Backpropagation in Convolutional Neural Network (CNN)" (2016). Each function is
one equation, as close to its printed form as 0-based indexing allows: the
paper's centred offsets u, v in -2..2 of a 5x5 kernel become 0..K-1, and the
valid region of eq. (5) starts where the kernel fits entirely, so the input
pixel a(i-u, j-v) is a[i + K-1 - u, j + K-1 - v]. Loops run over the
kernel, maps and samples; the (i, j) sums are NumPy slices, which keeps the
oracle fast enough to test many shapes but still a transcription.

Nothing here shares code with fastcnn.
"""

import numpy as np


def sigmoid(z):
    """eq. (4)"""
    return 1.0 / (1.0 + np.exp(-z))


def conv_valid(a, k, b, activation="sigmoid"):
    """eq. (5), (8): C_q(i, j) = sigma(sum_p sum_{u,v} a_p(i-u, j-v) k_pq(u, v) + b_q)

    a (N, P, H, W), k (Q, P, KH, KW), b (Q,) -> (N, Q, H-KH+1, W-KW+1)
    """
    a, k, b = (np.asarray(t, dtype=np.float64) for t in (a, k, b))
    N, P, H, W = a.shape
    Q, _, KH, KW = k.shape
    OH, OW = H - KH + 1, W - KW + 1
    z = np.zeros((N, Q, OH, OW))
    for q in range(Q):
        for p in range(P):
            for u in range(KH):
                for v in range(KW):
                    # a(i-u, j-v) for every valid (i, j)
                    r, c = KH - 1 - u, KW - 1 - v
                    z[:, q] += a[:, p, r : r + OH, c : c + OW] * k[q, p, u, v]
        z[:, q] += b[q]
    return sigmoid(z) if activation == "sigmoid" else z


def conv_delta(grad, y, activation="sigmoid"):
    """eq. (37), (57): Delta C_sigma = Delta C * C (1 - C)"""
    grad, y = np.asarray(grad, np.float64), np.asarray(y, np.float64)
    return grad * y * (1 - y) if activation == "sigmoid" else grad


def conv_weight_grad(a, delta, kernel_size):
    """eq. (39), (58): Delta k_pq(u, v) = sum_n sum_{i,j} a_p(i-u, j-v) Delta C_q,sigma(i, j)

    a (N, P, H, W), delta (N, Q, OH, OW) -> (Q, P, KH, KW), summed over the batch.
    """
    a, delta = np.asarray(a, np.float64), np.asarray(delta, np.float64)
    N, P, H, W = a.shape
    Q, OH, OW = delta.shape[1:]
    KH, KW = kernel_size
    dk = np.zeros((Q, P, KH, KW))
    for q in range(Q):
        for p in range(P):
            for u in range(KH):
                for v in range(KW):
                    r, c = KH - 1 - u, KW - 1 - v
                    dk[q, p, u, v] = np.sum(a[:, p, r : r + OH, c : c + OW] * delta[:, q])
    return dk


def conv_bias_grad(delta):
    """eq. (45), (64): Delta b_q = sum_n sum_{i,j} Delta C_q,sigma(i, j)"""
    return np.asarray(delta, np.float64).sum(axis=(0, 2, 3))


def conv_input_grad(delta, k, input_hw):
    """eq. (47)-(49): Delta S_p(i, j) = sum_q sum_{u,v} dL/dC_q,sigma(i+u, j+v) * k_pq(u, v)

    written as the chain rule it comes from: the pre-activation C_q,sigma(i, j)
    took a_p(i-u, j-v) * k_pq(u, v), so a_p at that position receives
    Delta C_q,sigma(i, j) * k_pq(u, v).
    delta (N, Q, OH, OW), k (Q, P, KH, KW) -> (N, P, H, W)
    """
    delta, k = np.asarray(delta, np.float64), np.asarray(k, np.float64)
    N, Q, OH, OW = delta.shape
    _, P, KH, KW = k.shape
    H, W = input_hw
    da = np.zeros((N, P, H, W))
    for q in range(Q):
        for p in range(P):
            for u in range(KH):
                for v in range(KW):
                    r, c = KH - 1 - u, KW - 1 - v
                    da[:, p, r : r + OH, c : c + OW] += delta[:, q] * k[q, p, u, v]
    return da


def mean_pool(c, s=2):
    """eq. (6), (9): S(i, j) = 1/s^2 sum_{u,v<s} C(s i + u, s j + v) (0-based)"""
    c = np.asarray(c, np.float64)
    N, P, H, W = c.shape
    OH, OW = H // s, W // s
    out = np.zeros((N, P, OH, OW))
    for i in range(OH):
        for j in range(OW):
            for u in range(s):
                for v in range(s):
                    out[:, :, i, j] += c[:, :, s * i + u, s * j + v]
    return out / (s * s)


def mean_upsample(ds, hw, s=2):
    """eq. (32), (52): Delta C(i, j) = 1/s^2 Delta S(ceil(i/s), ceil(j/s)) (1-based),
    i.e. Delta S(i // s, j // s) 0-based; pixels that pooling dropped get 0."""
    ds = np.asarray(ds, np.float64)
    N, P, OH, OW = ds.shape
    H, W = hw
    dc = np.zeros((N, P, H, W))
    for i in range(OH * s):
        for j in range(OW * s):
            dc[:, :, i, j] = ds[:, :, i // s, j // s] / (s * s)
    return dc


def dense(f, W, b, activation="sigmoid"):
    """eq. (12): yhat = sigma(W f + b), for a batch f (N, F)."""
    z = np.asarray(f, np.float64) @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
    return sigmoid(z) if activation == "sigmoid" else z


def loss(yhat, y_onehot):
    """eq. (13), averaged over the batch: L = 1/N sum_n 1/2 sum_i (yhat(i) - y(i))^2"""
    return 0.5 * np.sum((yhat - y_onehot) ** 2) / yhat.shape[0]


def seed_cnn_backprop(params, x, labels, classes=10):
    """Section 1 and 2 for the paper's network, for a batch: returns (L, grads).

    params: dict with C1.weight, C1.bias, C2.weight, C2.bias, FC.weight, FC.bias.
    The 1/N of the batch mean enters as dL/dyhat = (yhat - y) / N.
    """
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(x, np.float64)
    N = x.shape[0]
    y = np.eye(classes)[labels]
    # section 1
    C1 = conv_valid(x, p["C1.weight"], p["C1.bias"])          # eq. (4)-(5)
    S1 = mean_pool(C1)                                         # eq. (6)
    C2 = conv_valid(S1, p["C2.weight"], p["C2.bias"])         # eq. (7)-(8)
    S2 = mean_pool(C2)                                         # eq. (9)
    f = S2.reshape(N, -1)                                      # eq. (10), C order
    yhat = dense(f, p["FC.weight"], p["FC.bias"])             # eq. (12)
    L = loss(yhat, y)                                          # eq. (13)
    # section 2
    dyhat = (yhat - y) * yhat * (1 - yhat) / N                 # eq. (17), with the batch mean
    g = {"FC.weight": dyhat.T @ f,                             # eq. (19)
         "FC.bias": dyhat.sum(0)}                              # eq. (24)
    df = dyhat @ p["FC.weight"]                                # eq. (30)
    dS2 = df.reshape(S2.shape)                                 # eq. (31)
    dC2 = mean_upsample(dS2, C2.shape[2:])                     # eq. (32)
    d2 = conv_delta(dC2, C2)                                   # eq. (37)
    g["C2.weight"] = conv_weight_grad(S1, d2, (5, 5))          # eq. (39)-(40)
    g["C2.bias"] = conv_bias_grad(d2)                          # eq. (45)
    dS1 = conv_input_grad(d2, p["C2.weight"], S1.shape[2:])    # eq. (49)-(51)
    dC1 = mean_upsample(dS1, C1.shape[2:])                     # eq. (52)
    d1 = conv_delta(dC1, C1)                                   # eq. (57)
    g["C1.weight"] = conv_weight_grad(x, d1, (5, 5))           # eq. (58)-(59)
    g["C1.bias"] = conv_bias_grad(d1)                          # eq. (64)
    return L, g


# ---------------------------------------------------------------------------
# Beyond the paper: activations, padding and stride, max pooling, softmax,
# cross-entropy. Definitions, not derivations: the gradients below follow
# from the chain rule on the forward sums, term by term.

ACTIVATIONS = {
    None: (lambda z: z, lambda y: np.ones_like(y)),
    "sigmoid": (sigmoid, lambda y: y * (1 - y)),
    "relu": (lambda z: np.maximum(z, 0), lambda y: (y > 0).astype(float)),
    "tanh": (np.tanh, lambda y: 1 - y**2),
    "tanh_opt": (lambda z: 1.7159 * np.tanh(2 / 3 * z),
                 lambda y: 2 / 3 * 1.7159 * (1 - (y / 1.7159) ** 2)),
}


def pad(a, pads):
    """Zeros around each map: pads = (top, bottom, left, right)."""
    t, b, l_, r = pads
    return np.pad(np.asarray(a, np.float64), ((0, 0), (0, 0), (t, b), (l_, r)))


def conv_general(a, k, b, stride=1, pads=(0, 0, 0, 0), activation=None):
    """z_q(i, j) = sum_p sum_{u,v} a_pad_p(s i + KH-1-u, s j + KW-1-v) k_pq(u, v) + b_q,
    then the activation: eq. (5) with padding and stride."""
    ap, k = pad(a, pads), np.asarray(k, np.float64)
    N, P, H, W = ap.shape
    Q, _, KH, KW = k.shape
    OH, OW = (H - KH) // stride + 1, (W - KW) // stride + 1
    z = np.zeros((N, Q, OH, OW))
    for q in range(Q):
        for p in range(P):
            for u in range(KH):
                for v in range(KW):
                    r, c = KH - 1 - u, KW - 1 - v
                    z[:, q] += ap[:, p, r : r + stride * (OH - 1) + 1 : stride,
                                  c : c + stride * (OW - 1) + 1 : stride] * k[q, p, u, v]
        z[:, q] += b[q]
    return ACTIVATIONS[activation][0](z)


def conv_general_grads(a, k, y, grad, stride=1, pads=(0, 0, 0, 0), activation=None):
    """(dk, db, da) of conv_general, by the chain rule on its sum."""
    ap, k = pad(a, pads), np.asarray(k, np.float64)
    delta = np.asarray(grad, np.float64) * ACTIVATIONS[activation][1](np.asarray(y, np.float64))
    N, P, H, W = ap.shape
    Q, _, KH, KW = k.shape
    OH, OW = delta.shape[2:]
    dk, dap = np.zeros_like(k), np.zeros_like(ap)
    for q in range(Q):
        for p in range(P):
            for u in range(KH):
                for v in range(KW):
                    r, c = KH - 1 - u, KW - 1 - v
                    rows = slice(r, r + stride * (OH - 1) + 1, stride)
                    cols = slice(c, c + stride * (OW - 1) + 1, stride)
                    dk[q, p, u, v] = np.sum(ap[:, p, rows, cols] * delta[:, q])
                    dap[:, p, rows, cols] += delta[:, q] * k[q, p, u, v]
    t, b, l_, r = pads
    da = dap[:, :, t : H - b, l_ : W - r]
    return dk, delta.sum(axis=(0, 2, 3)), da


def max_pool(c, size, stride):
    """S(i, j) = max of the window at (stride i, stride j); also the argmax
    (first in scan order), for the backward pass."""
    c = np.asarray(c, np.float64)
    N, P, H, W = c.shape
    OH, OW = (H - size) // stride + 1, (W - size) // stride + 1
    out = np.zeros((N, P, OH, OW))
    arg = np.zeros((N, P, OH, OW, 2), int)
    for n in range(N):
        for p in range(P):
            for i in range(OH):
                for j in range(OW):
                    window = c[n, p, stride * i : stride * i + size, stride * j : stride * j + size]
                    u, v = np.unravel_index(np.argmax(window), window.shape)
                    out[n, p, i, j] = window[u, v]
                    arg[n, p, i, j] = (stride * i + u, stride * j + v)
    return out, arg


def max_unpool(g, arg, hw):
    """Each window's gradient to its maximum, added where windows overlap."""
    N, P, OH, OW = g.shape
    dx = np.zeros((N, P) + tuple(hw))
    for n in range(N):
        for p in range(P):
            for i in range(OH):
                for j in range(OW):
                    dx[n, p, arg[n, p, i, j, 0], arg[n, p, i, j, 1]] += g[n, p, i, j]
    return dx


def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(z, t):
    """(L, dL/dz): L = 1/N sum_n -sum_k t_nk log softmax(z_n)_k."""
    z, t = np.asarray(z, np.float64), np.asarray(t, np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    n = z.shape[0]
    return -np.sum(t * logp) / n, (softmax(z) * t.sum(axis=1, keepdims=True) - t) / n
