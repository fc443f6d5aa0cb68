"""The report's network, re-implemented from the report in its own style, as the baseline.

What the report does, kept on purpose: float64 throughout; fully connected layers and batch
norm work on (features, batch) matrices, so images are transposed in and out of that layout
around them; batch norm after the convolution normalises every activation (channel and
pixel) on its own; every parameter has its own Adam, stepped inside ``backward``; im2col and
col2im loop over the kernel offsets; max pooling keeps an equality mask (ties all receive the
gradient); dropout draws a float64 mask. The network is fixed: conv (K filters, 3x3, same
padding) - batch norm - ReLU - 2x2 max pool - affine (M) - batch norm - ReLU - dropout -
affine (C) - softmax.
"""

from __future__ import annotations

import numpy as np


class Adam:
    """One parameter's Adam state; ``grad`` returns the step to subtract."""

    def __init__(self) -> None:
        self.t = 0
        self.m = 0.0
        self.v = 0.0

    def grad(self, dEn_dW, alpha=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        self.t += 1
        self.m *= beta1
        self.m += (1 - beta1) * dEn_dW
        self.v *= beta2
        self.v += (1 - beta2) * dEn_dW * dEn_dW
        m_hat = self.m / (1 - np.power(beta1, self.t))
        v_hat = self.v / (1 - np.power(beta2, self.t))
        return alpha * m_hat / (np.sqrt(v_hat) + eps)


def random_ndarray(rng, fan_in, shape):
    return rng.normal(0, 1 / np.sqrt(fan_in), shape)


class ReLU:
    def forward(self, t):
        self.x = t
        return np.maximum(0, t)

    def backward(self, dEn_dy):
        return np.where(self.x > 0, dEn_dy, 0)


class Dropout:
    def __init__(self, rng, rate=0.5):
        self.rng, self.rate = rng, rate

    def forward(self, x, is_train):
        if is_train:
            self.is_valid = self.rng.random(x.shape) > self.rate
            return np.where(self.is_valid, x, 0)
        return x * (1 - self.rate)

    def backward(self, dEn_dy):
        return np.where(self.is_valid, dEn_dy, 0)


class BatchNormalization:
    """Per row of a (d, B) matrix, with moving averages for inference (the report's fix)."""

    eps = 1e-10

    def __init__(self):
        self.gamma = 1
        self.beta = 0
        self.adam_gamma = Adam()
        self.adam_beta = Adam()
        self.var_sum = 0.0
        self.mean_sum = 0.0

    def forward(self, x, is_train):
        self.x = x
        if is_train:
            self.mean = np.mean(x, axis=1)
            self.var = np.var(x, axis=1)
            momentum = 0.01
            self.mean_sum *= 1 - momentum
            self.mean_sum += momentum * self.mean
            self.var_sum *= 1 - momentum
            self.var_sum += momentum * self.var
            self.x_hat = ((x.T - self.mean) / np.sqrt(self.var + self.eps)).T
            return (self.gamma * self.x_hat.T + self.beta).T
        c = self.gamma / np.sqrt(self.var_sum + self.eps)
        return (c * x.T + (self.beta - c * self.mean_sum)).T

    def backward(self, dEn_dy):
        B = dEn_dy.shape[1]
        dEn_dx_hat = (dEn_dy.T * self.gamma).T
        centred = (self.x.T - self.mean).T
        dEn_dvar = (
            np.sum(dEn_dx_hat * centred, axis=1) * (-1 / 2) * (self.var + self.eps) ** (-3 / 2)
        )
        c = 1 / np.sqrt(self.var + self.eps)
        dEn_dmean = -c * np.sum(dEn_dx_hat, axis=1) + dEn_dvar * (-2) * (
            np.mean(self.x, axis=1) - self.mean
        )
        dEn_dx = (dEn_dx_hat.T * c + dEn_dvar * 2 * centred.T / B + dEn_dmean / B).T
        dEn_dgamma = np.sum(dEn_dy * self.x_hat, axis=1)
        dEn_dbeta = np.sum(dEn_dy, axis=1)
        self.gamma -= self.adam_gamma.grad(dEn_dgamma)
        self.beta -= self.adam_beta.grad(dEn_dbeta)
        return dEn_dx


def convert_batch_into_X(batch, R, p, s):
    """(B, ch, dy, dx) -> X (R*R*ch, B*dh*dw), by a loop over the kernel offsets."""
    B, ch, dy, dx = batch.shape
    batch = np.pad(batch, ((0, 0), (0, 0), (p, p), (p, p)))
    di = 2 * p + dy - R
    dj = 2 * p + dx - R
    dh = di // s + 1
    dw = dj // s + 1
    X = np.empty((B, ch, R, R, dh, dw))
    for i in range(R):
        for j in range(R):
            X[:, :, i, j, :, :] = batch[:, :, i : i + di + 1 : s, j : j + dj + 1 : s]
    X = X.transpose(1, 2, 3, 0, 4, 5).reshape(R * R * ch, -1)
    return X, (B, dh, dw)


def convert_X_into_batch(X, R, p, s, shape):
    B, dh, dw = shape
    di = s * (dh - 1)
    dj = s * (dw - 1)
    dy = di - 2 * p + R
    dx = dj - 2 * p + R
    X = X.reshape(-1, R, R, B, dh, dw).transpose(3, 0, 1, 2, 4, 5)
    ch = X.shape[1]
    batch = np.zeros((B, ch, dy + 2 * p, dx + 2 * p))
    for i in range(R):
        for j in range(R):
            batch[:, :, i : i + di + 1 : s, j : j + dj + 1 : s] += X[:, :, i, j, :, :]
    return batch[:, :, p : dy + p, p : dx + p]


class Convolution:
    def __init__(self, rng, ch, K, R, p=-1, s=1):
        self.adam_W = Adam()
        self.adam_b = Adam()
        self.R = R
        self.p = R // 2 if p < 0 else p
        self.s = s
        self.W = random_ndarray(rng, R * R * ch, (K, R * R * ch))
        self.b = random_ndarray(rng, R * R * ch, K)

    def forward(self, x):
        self.x, (B, dh, dw) = convert_batch_into_X(x, self.R, self.p, self.s)
        y = (np.dot(self.W, self.x).T + self.b).T
        return y.reshape(-1, B, dh, dw).transpose(1, 0, 2, 3)

    def backward(self, dEn_dY):
        B, K, dh, dw = dEn_dY.shape
        dEn_dY = dEn_dY.transpose(1, 0, 2, 3).reshape(K, -1)
        dEn_dX = np.dot(self.W.T, dEn_dY)
        dEn_dW = np.dot(dEn_dY, self.x.T)
        dEn_db = dEn_dY.sum(axis=1)
        self.W -= self.adam_W.grad(dEn_dW)
        self.b -= self.adam_b.grad(dEn_db)
        return convert_X_into_batch(dEn_dX, self.R, self.p, self.s, (B, dh, dw))


class Pooling:
    def __init__(self, d):
        self.d = d

    def forward(self, x):
        B, ch, dy, dx = x.shape
        self.shape_in = x.shape
        dh, dw = dy // self.d, dx // self.d
        x = x.reshape(B, ch, dh, self.d, dw, self.d).transpose(3, 5, 0, 1, 2, 4)
        x = x.reshape(self.d * self.d, -1)
        y = x.max(axis=0)
        self.mask = x == y
        return y.reshape(B, ch, dh, dw)

    def backward(self, dEn_dY):
        B, ch, dy, dx = self.shape_in
        dh, dw = dy // self.d, dx // self.d
        dEn_dX = np.where(self.mask, dEn_dY.reshape(-1), 0)
        dEn_dX = dEn_dX.reshape(self.d, self.d, B, ch, dh, dw).transpose(2, 3, 4, 0, 5, 1)
        return dEn_dX.reshape(B, ch, dy, dx)

    def convert_images_into_vectors(self, X):
        self.shape = X.shape
        return X.transpose(1, 2, 3, 0).reshape(-1, self.shape[0])

    def convert_vectors_into_images(self, Y):
        B, ch, dy, dx = self.shape
        return Y.reshape(ch, dy, dx, B).transpose(3, 0, 1, 2)


class Affine:
    def __init__(self, rng, row, col):
        self.adam_W = Adam()
        self.adam_b = Adam()
        self.W = random_ndarray(rng, col, (row, col))
        self.b = random_ndarray(rng, col, row)

    def forward(self, x):
        self.x = x
        return (np.dot(self.W, x).T + self.b).T

    def backward(self, dEn_dY):
        dEn_dX = np.dot(self.W.T, dEn_dY)
        dEn_dW = np.dot(dEn_dY, self.x.T)
        dEn_db = dEn_dY.sum(axis=1)
        self.W -= self.adam_W.grad(dEn_dW)
        self.b -= self.adam_b.grad(dEn_db)
        return dEn_dX


class Softmax:
    def forward(self, a):
        ex = np.exp(a - np.max(a, axis=0))
        self.y = ex / np.sum(ex, axis=0)
        return self.y

    def backward(self, y, B):
        cols = np.arange(B)
        self.y[y, cols] -= 1
        self.y /= B
        return self.y


class NeuralNetwork:
    """The report's Neural_network: ch x size x size images, K filters, M hidden, C classes."""

    def __init__(self, ch, size, K, M, C, seed=100):
        rng = np.random.default_rng(seed)
        d = K * (size // 2) ** 2
        self.layers = {
            "conv": Convolution(rng, ch, K, 3),
            "bn1": BatchNormalization(),
            "relu1": ReLU(),
            "pooling": Pooling(2),
            "affine1": Affine(rng, M, d),
            "bn2": BatchNormalization(),
            "relu2": ReLU(),
            "dropout": Dropout(rng),
            "affine2": Affine(rng, C, M),
            "softmax": Softmax(),
        }

    def forward(self, x, is_train=False):
        layers = self.layers
        x = layers["conv"].forward(x)
        B, ch, dh, dw = x.shape
        x = x.transpose(1, 2, 3, 0).reshape(-1, B)
        x = layers["bn1"].forward(x, is_train)
        x = x.reshape(ch, dh, dw, B).transpose(3, 0, 1, 2)
        x = layers["relu1"].forward(x)
        x = layers["pooling"].forward(x)
        x = layers["pooling"].convert_images_into_vectors(x)
        x = layers["affine1"].forward(x)
        x = layers["bn2"].forward(x, is_train)
        x = layers["relu2"].forward(x)
        x = layers["dropout"].forward(x, is_train)
        x = layers["affine2"].forward(x)
        return layers["softmax"].forward(x)

    def train_step(self, X, Y):
        """One mini-batch: forward, cross-entropy, backward with the per-layer Adam updates.

        X: (B, ch, size, size) float64; Y: (B,) labels. Returns the mean cross-entropy.
        """
        B = len(X)
        y2 = self.forward(X, is_train=True)
        En = np.mean(-np.log(y2[Y, np.arange(B)]))
        layers = self.layers
        d = layers["softmax"].backward(Y, B)
        d = layers["affine2"].backward(d)
        d = layers["dropout"].backward(d)
        d = layers["relu2"].backward(d)
        d = layers["bn2"].backward(d)
        d = layers["affine1"].backward(d)
        d = layers["pooling"].convert_vectors_into_images(d)
        d = layers["pooling"].backward(d)
        d = layers["relu1"].backward(d)
        B, ch, dh, dw = d.shape
        d = d.transpose(1, 2, 3, 0).reshape(-1, B)
        d = layers["bn1"].backward(d)
        d = d.reshape(ch, dh, dw, B).transpose(3, 0, 1, 2)
        layers["conv"].backward(d)
        return En

    def predict(self, X):
        """Class probabilities, (C, B)."""
        return self.forward(X)


def report_network(net) -> NeuralNetwork | None:
    """The report's network with the sizes of a cnnbuild network, or None if ``net`` is not
    the report's architecture (conv 3x3 same - bn - relu - pool 2 - dense - bn - relu -
    dropout - dense - softmax)."""
    kinds = [node.layer.type_name for node in net.nodes if node.layer.type_name != "flatten"]
    expected = ["conv", "batchnorm", "relu", "maxpool", "dense", "batchnorm", "relu"]
    expected += ["dropout", "dense", "softmax"]
    if kinds != expected:
        return None
    conv = net.nodes[0].layer.config
    if conv["kernel"] != 3 or conv["padding"] != "same" or conv["stride"] != 1:
        return None
    ch, size, _ = net.input_shape
    hidden = next(
        node.layer.config["units"] for node in net.nodes if node.layer.type_name == "dense"
    )
    return NeuralNetwork(ch, size, conv["filters"], hidden, net.classes)
