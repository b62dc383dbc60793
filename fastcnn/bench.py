"""Speed of the paper's network: fastcnn next to PyTorch and plain NumPy.

Three implementations of the same work (seed_cnn: forward, squared-error
loss, backward, SGD), each pinned to the same number of threads:

  fastcnn   this package;
  torch     PyTorch on the CPU: Conv2d with the rotated kernels, Sigmoid,
            AvgPool2d, Linear, torch.optim.SGD (skipped if torch is absent);
  numpy     vectorised NumPy: im2col by sliding_window_view, then matmul
            (BLAS), as Caffe lowers a convolution (section 3 of Jianfeng
            Wang's "Forward and Backward Propagation of Convolutional Layer").

`run()` measures the headline figures that `fastcnn bench` prints; the
pytest-benchmark suite in benchmarks/ times the same callables. Medians of
repeated runs; ratios are taken within one run on one machine.
"""

import platform
import statistics
import time

import numpy as np

import fastcnn
from fastcnn.layers import Conv2D, Dense

# ----------------------------------------------------------------- arithmetic


def layer_macs(layer):
    """Multiply-adds of one image through a Conv2D or Dense layer (0 for others)."""
    if isinstance(layer, Conv2D):
        m, oh, ow = layer.output_shape
        kh, kw = layer.kernel_size
        return m * oh * ow * layer.in_maps * kh * kw
    if isinstance(layer, Dense):
        return layer.in_features * layer.out_features
    return 0


def forward_macs(model):
    """Multiply-adds of one image's forward pass."""
    return sum(layer_macs(layer) for layer in model.layers)


def training_macs(model):
    """Multiply-adds of one image's training step: the forward pass, the
    weight gradients (as many again), and the input gradients of every layer
    with parameters but the first (0.52 M for seed_cnn: 1.05 MFLOP)."""
    with_params = [layer_macs(layer) for layer in model.layers if layer_macs(layer)]
    return 2 * forward_macs(model) + sum(with_params[1:])


# ------------------------------------------------------------ the machine


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_ghz():
    """Nominal clock from /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) / 1000
    except (OSError, ValueError):
        pass
    return None


# vector lanes (float32) of the widest kernels each instruction set gets
_LANES_F32 = {"avx512": 16, "avx2+fma": 8, "baseline": 4}


def peak_gflops(threads, dtype="float32"):
    """Rough peak of `threads` cores: 2 FMA pipes x SIMD lanes x 2 flops x clock.

    Lanes are those of the widest instruction set this CPU has and fastcnn
    has kernels for (AVX-512: 16 floats, 8 doubles; AVX2: 8 and 4; the SSE2
    baseline: 4 and 2), whichever version is in use. Some CPUs have one
    512-bit FMA pipe, not two: measured_gemm_gflops is the check. Returns
    (GFLOP/s, how it was computed) or (None, reason) when the clock is unknown."""
    ghz = cpu_ghz()
    if ghz is None:
        return None, "clock unknown"
    widest = fastcnn.available_simd_paths()[-1]
    lanes = _LANES_F32.get(widest.split(" ")[0], 4)
    if np.dtype(dtype) == np.float64:
        lanes //= 2
    peak = threads * 2 * lanes * 2 * ghz
    return peak, (f"{threads} cores x 2 FMA x {lanes} lanes ({widest.split(' ')[0]}) "
                  f"x 2 flops x {ghz:.2f} GHz")


def measured_gemm_gflops(threads, dtype="float32", n=2048, repeat=3):
    """GFLOP/s of an n x n matrix product on `threads` threads (median of
    `repeat`) by NumPy's BLAS (where threadpoolctl can set its threads) and
    by PyTorch (if installed): {library: GFLOP/s}, the practical peak the
    kernels are held to."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)).astype(dtype), rng.random((n, n)).astype(dtype)
    rates = {}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        with threadpool_limits(threads, user_api="blas"):
            a @ b  # warm up
            rates["numpy"] = 2 * n**3 / median_seconds(np.matmul, repeat, a, b) / 1e9
    if torch_available():
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            torch.mm(ta, tb)
            rates["torch"] = 2 * n**3 / median_seconds(torch.mm, repeat, ta, tb) / 1e9
        finally:
            torch.set_num_threads(before)
    return rates


# ------------------------------------------------------------ the baselines


class Implementation:
    """One of the three implementations compared: the same work, timed alike."""

    name = None

    def step(self, x, t):
        """One SGD step (alpha 1) on a batch x (N, 1, 28, 28) with one-hot
        targets t (N, 10); returns the batch loss of eq. (13)."""
        raise NotImplementedError

    def epoch(self, x, y, batch_size=50, seed=0):
        """One epoch of SGD over x (N, 1, 28, 28), labels y (N,), shuffled by seed."""
        raise NotImplementedError

    def predict(self, x):
        """Class ids (N,) for images x (N, 1, 28, 28)."""
        raise NotImplementedError


class FastcnnImpl(Implementation):
    """fastcnn itself."""

    name = "fastcnn"

    def __init__(self, model, optimizer="sgd"):
        self.model = model
        self.opt = _OPTIMIZERS[optimizer](fastcnn, model)
        self._workspace = None

    def step(self, x, t):
        """One step on a batch (t one-hot): backprop, then the optimizer's
        update, as fit makes it (no checks, the arrays kept between steps)."""
        threads = fastcnn.get_num_threads()
        ws = self._workspace
        if ws is None or ws.rows < len(x) or ws.threads != threads:
            self._workspace = self.model.workspace(len(x), train=True, threads=threads)
        with self.model.lock.writing():
            loss = self.model.train_batch(x, t, self._workspace)
            self.opt.step(threads=self._workspace.threads)
        return loss

    def epoch(self, x, y, batch_size=50, seed=0):
        self.model.fit(x, y, epochs=1, batch_size=batch_size, seed=seed, progress=False,
                       optimizer=self.opt)

    def predict(self, x):
        return self.model.predict(x)


class TorchImpl(Implementation):
    """The same network in PyTorch (fastcnn.interop.to_torch: Conv2d with the
    rotated kernels, the same activations and pooling, Linear), the same loss
    and the same optimizer, starting from the same parameters."""

    name = "torch"

    def __init__(self, model, optimizer="sgd"):
        import torch

        from fastcnn.interop import to_torch

        self.torch = torch
        self.dtype = torch.float32 if model.dtype == np.float32 else torch.float64
        self.net = to_torch(model)
        self.cross_entropy = model.loss == "cross_entropy"
        self.classes = model.output_shape[0]
        self.opt = _OPTIMIZERS[optimizer](torch, self.net.parameters())

    def _loss(self, out, labels, onehot):
        if self.cross_entropy:
            return self.torch.nn.functional.cross_entropy(out, labels)
        return 0.5 * ((out - onehot) ** 2).sum() / out.shape[0]  # eq. (13), batch mean

    def step(self, x, t):
        torch = self.torch
        tt = torch.from_numpy(t)
        self.opt.zero_grad(set_to_none=True)
        loss = self._loss(self.net(torch.from_numpy(x)), tt.argmax(1), tt)
        loss.backward()
        self.opt.step()
        return loss.item()

    def epoch(self, x, y, batch_size=50, seed=0):
        torch = self.torch
        xt, yt = torch.from_numpy(x), torch.from_numpy(np.asarray(y, dtype=np.int64))
        tt = torch.nn.functional.one_hot(yt, self.classes).to(self.dtype)
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            self.opt.zero_grad(set_to_none=True)
            loss = self._loss(self.net(xt[idx]), yt[idx], tt[idx])
            loss.backward()
            self.opt.step()

    def predict(self, x, batch_size=1000):
        torch = self.torch
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                out.append(self.net(torch.from_numpy(x[start : start + batch_size])).argmax(1))
        return torch.cat(out).numpy()


def _sgd(lib, params):
    # fastcnn.SGD(model, lr) and torch.optim.SGD(parameters, lr) alike
    return (lib.SGD if lib is fastcnn else lib.optim.SGD)(params, lr=1.0)


def _adam(lib, params):
    return (lib.Adam if lib is fastcnn else lib.optim.Adam)(params, lr=1e-3)


# the paper's SGD with alpha 1, and the Adam (lr 1e-3) that models.lenet5 trains with
_OPTIMIZERS = {"sgd": _sgd, "adam": _adam}


class NumpyImpl(Implementation):
    """seed_cnn in vectorised NumPy: each convolution as im2col + matmul.

    im2col: sliding_window_view gives every KHxKW window without copying;
    reshaping them into rows of a matrix copies, and a matmul with the
    rotated kernels (as a matrix) computes all outputs. The weight gradient
    is delta^T times the same matrix (Wang's eq. 21), the input gradient
    the im2col of the zero-padded delta times the kernels (eq. 16)."""

    name = "numpy"

    def __init__(self, model):
        self.p = {k: v.copy() for k, v in model.params.items()}
        self.dtype = model.dtype

    @staticmethod
    def _cols(a, kh, kw):
        n, c, h, w = a.shape
        win = np.lib.stride_tricks.sliding_window_view(a, (kh, kw), axis=(2, 3))
        oh, ow = h - kh + 1, w - kw + 1
        return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw), oh, ow

    def _conv(self, a, name):
        k, b = self.p[f"{name}.weight"], self.p[f"{name}.bias"]
        m, c, kh, kw = k.shape
        cols, oh, ow = self._cols(a, kh, kw)
        z = cols @ k[:, :, ::-1, ::-1].reshape(m, -1).T + b
        y = 1 / (1 + np.exp(-z))
        return y.reshape(a.shape[0], oh, ow, m).transpose(0, 3, 1, 2), cols

    @staticmethod
    def _pool(a):
        n, c, h, w = a.shape
        return a.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))

    @staticmethod
    def _unpool(g):
        return np.repeat(np.repeat(g, 2, axis=2), 2, axis=3) / 4

    def forward(self, x):
        """Outputs (N, 10) and what the backward pass needs."""
        c1, cols1 = self._conv(x, "C1")
        s1 = self._pool(c1)
        c2, cols2 = self._conv(s1, "C2")
        s2 = self._pool(c2)
        f = s2.reshape(len(x), -1)
        yhat = 1 / (1 + np.exp(-(f @ self.p["FC.weight"].T + self.p["FC.bias"])))
        return yhat, (c1, cols1, s1, c2, cols2, f)

    def _conv_grads(self, delta, cols, name, shape_in, input_grad):
        k = self.p[f"{name}.weight"]
        m, c, kh, kw = k.shape
        d = delta.transpose(0, 2, 3, 1).reshape(-1, m)
        g = {f"{name}.weight": (d.T @ cols).reshape(m, c, kh, kw)[:, :, ::-1, ::-1],
             f"{name}.bias": d.sum(0)}
        if not input_grad:
            return g, None
        pad = np.pad(delta, ((0, 0), (0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)))
        pcols, _, _ = self._cols(pad, kh, kw)
        dx = pcols @ k.transpose(0, 2, 3, 1).reshape(m * kh * kw, c)
        n, _, h, w = shape_in
        return g, dx.reshape(n, h, w, c).transpose(0, 3, 1, 2)

    def step(self, x, t):
        n = len(x)
        yhat, (c1, cols1, s1, c2, cols2, f) = self.forward(x)
        loss = 0.5 * np.sum((yhat - t) ** 2) / n
        dy = (yhat - t) * yhat * (1 - yhat) / n
        grads = {"FC.weight": dy.T @ f, "FC.bias": dy.sum(0)}
        ds2 = (dy @ self.p["FC.weight"]).reshape(n, 12, 4, 4)
        d2 = self._unpool(ds2) * c2 * (1 - c2)
        g2, ds1 = self._conv_grads(d2, cols2, "C2", s1.shape, True)
        d1 = self._unpool(ds1) * c1 * (1 - c1)
        g1, _ = self._conv_grads(d1, cols1, "C1", x.shape, False)
        grads.update(g1)
        grads.update(g2)
        for k, g in grads.items():
            self.p[k] -= g.astype(self.dtype, copy=False)
        return loss

    def epoch(self, x, y, batch_size=50, seed=0):
        t = np.eye(10, dtype=self.dtype)[y]
        order = np.random.default_rng(seed).permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            self.step(x[idx], t[idx])

    def predict(self, x, batch_size=1000):
        return np.concatenate([self.forward(x[s : s + batch_size])[0].argmax(1)
                               for s in range(0, len(x), batch_size)])


def torch_available():
    """True if PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def implementations(model, which=("fastcnn", "torch", "numpy"), optimizer="sgd"):
    """The implementations asked for that can run here, each starting from
    model's parameters (and not changing model). optimizer: "sgd" (alpha 1,
    the paper's) or "adam" (lr 1e-3). The NumPy baseline is written for
    seed_cnn with SGD only."""
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {optimizer!r}")
    out = []
    for name in which:
        if name == "fastcnn":
            twin = fastcnn.Sequential.from_config(model.get_config())
            for k in model.params:
                twin.params[k][...] = model.params[k]
            out.append(FastcnnImpl(twin, optimizer))
        elif name == "torch" and torch_available():
            out.append(TorchImpl(model, optimizer))
        elif name == "numpy":
            shapes = {k: v.shape for k, v in model.params.items()}
            seed_shapes = {k: v.shape for k, v in fastcnn.seed_cnn().params.items()}
            if shapes != seed_shapes or model.loss != "mse" or optimizer != "sgd":
                raise ValueError("the NumPy baseline implements seed_cnn with SGD only")
            out.append(NumpyImpl(model))
    return out


def pin_threads(n):
    """Use n threads in fastcnn, PyTorch and NumPy's BLAS (threadpoolctl, if installed).
    Returns a description of what was pinned."""
    fastcnn.set_num_threads(n)
    pinned = ["fastcnn"]
    if torch_available():
        import torch

        torch.set_num_threads(n)
        pinned.append("torch")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
        pinned.append("numpy BLAS")
    except ImportError:
        pass
    return pinned


# ------------------------------------------------------------ measuring


def median_seconds(fn, repeat, *args):
    """Median wall time of fn(*args) over `repeat` runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _steps(impl, x, t, count):
    for _ in range(count):
        impl.step(x, t)


def data(n_train=60000, n_test=10000, dtype="float32"):
    """Fashion-MNIST if it is on this machine (never downloaded here), else
    random images of the same shape: the timings do not depend on pixels."""
    from fastcnn import datasets

    try:
        datasets.locate("fashion-mnist", "train", download_missing=False)
        x, y = datasets.load("fashion-mnist", "train", dtype=dtype)
        xt, _ = datasets.load("fashion-mnist", "test", dtype=dtype)
        source = "Fashion-MNIST"
    except (FileNotFoundError, ValueError):
        rng = np.random.default_rng(0)
        x = rng.random((n_train, 1, 28, 28)).astype(dtype)
        y = rng.integers(0, 10, n_train)
        xt = rng.random((n_test, 1, 28, 28)).astype(dtype)
        source = "random images"
    return x[:n_train], y[:n_train], xt[:n_test], source


def run(threads=2, dtype="float32", which=("fastcnn", "torch", "numpy"), epoch_images=60000,
        repeat=3, log=print):
    """Measure the headline figures; returns {impl: {metric: value}} and notes."""
    pinned = pin_threads(threads)
    x, y, xt, source = data(epoch_images, 10000, dtype)
    model = fastcnn.seed_cnn(seed=0, dtype=dtype)
    impls = implementations(model, which)
    rng = np.random.default_rng(1)
    results = {}
    for impl in impls:
        r = results[impl.name] = {}
        log(f"  measuring {impl.name} ...")
        for n in (1, 50):
            xb = rng.random((n, 1, 28, 28)).astype(dtype)
            tb = np.eye(10, dtype=dtype)[rng.integers(0, 10, n)]
            impl.step(xb, tb)  # warm up
            count = max(20, 200 // n)
            r[f"step{n}_us"] = median_seconds(_steps, repeat, impl, xb, tb, count) / count * 1e6
        impl.predict(xt[:1000])
        r["inference_img_s"] = len(xt) / median_seconds(impl.predict, repeat, xt)
        # the baselines' epochs take many seconds: one each
        epoch_repeat = repeat if impl.name == "fastcnn" else 1
        r["epoch_s"] = median_seconds(impl.epoch, epoch_repeat, x, y) * 60000 / len(x)
        r["epoch_gflops"] = training_macs(model) * 2 * 60000 / r["epoch_s"] / 1e9
    notes = {"threads": threads, "pinned": pinned, "dtype": dtype, "data": source,
             "epoch_images": len(x), "cpu": cpu_model(), "simd": fastcnn.simd_path(),
             "openmp": fastcnn.openmp_enabled(), "peak": peak_gflops(threads, dtype),
             "gemm": measured_gemm_gflops(threads, dtype),
             "macs_per_image": training_macs(model)}
    return results, notes


def format_table(results, notes):
    """The headline table, with each figure's ratio to fastcnn's."""
    base = results.get("fastcnn", {})
    rows = [
        ("seconds per epoch (60,000 images)", "epoch_s", "{:.2f}", True),
        ("GFLOP/s over the epoch", "epoch_gflops", "{:.1f}", False),
        ("inference, images/s", "inference_img_s", "{:,.0f}", False),
        ("training step, batch 1 (us)", "step1_us", "{:.0f}", True),
        ("training step, batch 50 (us)", "step50_us", "{:.0f}", True),
        ("  per image at batch 50 (us)", "step50_img_us", "{:.1f}", True),
    ]
    for r in results.values():
        r["step50_img_us"] = r["step50_us"] / 50
    names = list(results)
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"fastcnn {fastcnn.__version__} bench: seed_cnn, {notes['dtype']}, "
             f"{notes['threads']} thread(s) (pinned: {', '.join(notes['pinned'])}), "
             f"{notes['data']}", f"CPU: {notes['cpu']}; fastcnn kernels: {notes['simd']}, "
             f"OpenMP {'on' if notes['openmp'] else 'off'}"]
    peak, how = notes["peak"]
    gemm_rates = notes.get("gemm") or {}
    gemm = max(gemm_rates.values(), default=None)
    if peak:
        lines.append(f"peak about {peak:.0f} GFLOP/s ({how}); one training image is "
                     f"{notes['macs_per_image'] * 2 / 1e6:.2f} MFLOP")
    if gemm:
        rates = ", ".join(f"{lib} {rate:.0f}" for lib, rate in gemm_rates.items())
        lines.append(f"measured: a 2048x2048 {notes['dtype']} matrix product on "
                     f"{notes['threads']} thread(s) runs at {rates} GFLOP/s")
    lines.append("")
    lines.append("".ljust(width) + "".join(n.rjust(18) for n in names))
    for label, key, fmt, lower_is_better in rows:
        cells = []
        for n in names:
            v = results[n][key]
            text = fmt.format(v)
            if n != "fastcnn" and key in base and v:
                ratio = v / base[key] if lower_is_better else base[key] / v
                text += f" ({ratio:.1f}x)"
            cells.append(text.rjust(18))
        lines.append(label.ljust(width) + "".join(cells))
    if peak and "fastcnn" in results:
        lines.append("")
        share = results["fastcnn"]["epoch_gflops"] / peak
        of_gemm = (f" and {results['fastcnn']['epoch_gflops'] / gemm:.0%} of the fastest "
                   "matrix product's rate" if gemm else "")
        lines.append(f"fastcnn reaches {share:.0%} of that peak{of_gemm} over an epoch. "
                     "(Nx) = fastcnn is N times faster.")
    return "\n".join(lines)

