"""keras.io's "Text classification with Transformer" layer classes, as
written there: never registered, no ``get_config``, no ``**kwargs``. Shared
by the tests of user layer classes (copies, profile, the coverage matrix);
``hand_macs`` is each class's hand MAC count for the matrix's profile
check.

Example:
    >>> from _keras_io_layers import TransformerBlock
    >>> block = TransformerBlock(8, 2, 8)
"""

import keras

L = keras.layers


class TransformerBlock(L.Layer):
    """keras.io "Text classification with Transformer", as written there:
    never registered, no ``get_config``, no ``**kwargs``."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
        super().__init__()
        self.att = L.MultiHeadAttention(num_heads=num_heads,
                                        key_dim=embed_dim)
        self.ffn = keras.Sequential([L.Dense(ff_dim, activation="relu"),
                                     L.Dense(embed_dim)])
        self.layernorm1 = L.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = L.LayerNormalization(epsilon=1e-6)
        self.dropout1 = L.Dropout(rate)
        self.dropout2 = L.Dropout(rate)

    def call(self, inputs):
        attn_output = self.dropout1(self.att(inputs, inputs))
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.dropout2(self.ffn(out1))
        return self.layernorm2(out1 + ffn_output)

    def hand_macs(self, x, y) -> int:
        """By hand: self-attention (projections, scores, weighted sum,
        output projection) and the two FFN matmuls, per position."""
        t, e = x[1], x[-1]
        h, kd = self.att.num_heads, self.att.key_dim
        ff = self.ffn.layers[0].units
        return (t * e * h * kd * 3 + h * t * t * 2 * kd + t * h * kd * e
                + 2 * t * e * ff)


class TokenAndPositionEmbedding(L.Layer):
    """keras.io's token + position embedding (two lookups: no MACs)."""

    def __init__(self, maxlen, vocab_size, embed_dim):
        super().__init__()
        self.token_emb = L.Embedding(input_dim=vocab_size,
                                     output_dim=embed_dim)
        self.pos_emb = L.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        maxlen = keras.ops.shape(x)[-1]
        positions = self.pos_emb(keras.ops.arange(0, maxlen, 1))
        return self.token_emb(x) + positions

    def hand_macs(self, x, y) -> int:
        return 0


class StochasticDepth(L.Layer):
    """keras.io CCT's stochastic depth: drops the whole residual branch of
    a sample in training (a random per-sample keep), the identity at
    inference."""

    def __init__(self, drop_prop, **kwargs):
        super().__init__(**kwargs)
        self.drop_prob = drop_prop
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, x, training=None):
        if training:
            keep_prob = 1 - self.drop_prob
            shape = (keras.ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
            random_tensor = keep_prob + keras.random.uniform(
                shape, 0, 1, seed=self.seed_generator)
            random_tensor = keras.ops.floor(random_tensor)
            return (x / keep_prob) * random_tensor
        return x

    def hand_macs(self, x, y) -> int:
        return 0


class ResidualBlock(L.Layer):
    """A residual block written as a layer class (as many users write
    them): conv -> BN -> ReLU -> conv -> BN, added to its input."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = L.Conv2D(filters, 3, padding="same", use_bias=False)
        self.bn1 = L.BatchNormalization()
        self.conv2 = L.Conv2D(filters, 3, padding="same", use_bias=False)
        self.bn2 = L.BatchNormalization()

    def call(self, x):
        y = keras.ops.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return keras.ops.relu(x + y)

    def hand_macs(self, x, y) -> int:
        """Two 3x3 "same" convs, C -> C, per output pixel."""
        h, w, c = x[1], x[2], x[3]
        return 2 * h * w * 9 * c * c


class ScaledDense(L.Layer):
    """A Dense with a learned scale of the class's own (``add_weight``):
    opening it would drop that weight, so tfcomp keeps it whole."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(units)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones")

    def call(self, x):
        return self.dense(x) * self.scale


@keras.saving.register_keras_serializable(package="keras_io_pointnet")
class OrthogonalRegularizer(keras.regularizers.Regularizer):
    """keras.io "Point cloud classification with PointNet": pushes a
    T-net's feature transform towards an orthogonal matrix."""

    def __init__(self, num_features, l2reg=0.001):
        self.num_features = num_features
        self.l2reg = l2reg
        self.identity = keras.ops.eye(num_features)

    def __call__(self, x):
        x = keras.ops.reshape(x, (-1, self.num_features, self.num_features))
        xxt = keras.ops.tensordot(x, x, axes=(2, 2))
        xxt = keras.ops.reshape(xxt, (-1, self.num_features,
                                      self.num_features))
        return keras.ops.sum(self.l2reg * keras.ops.square(
            xxt - self.identity))

    def get_config(self):
        return {"num_features": self.num_features, "l2reg": self.l2reg}


@keras.saving.register_keras_serializable(package="keras_io_espcn")
class DepthToSpace(L.Layer):
    """keras.io "Image super-resolution using an efficient sub-pixel CNN":
    the sub-pixel shuffle, written with ``keras.ops`` (no weights)."""

    def __init__(self, block_size, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, x):
        _, h, w, c = keras.ops.shape(x)
        bs = self.block_size
        x = keras.ops.reshape(x, (-1, h, w, bs, bs, c // (bs * bs)))
        x = keras.ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return keras.ops.reshape(x, (-1, h * bs, w * bs, c // (bs * bs)))

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}

    def hand_macs(self, x, y) -> int:
        """A data movement: no MACs."""
        return 0
