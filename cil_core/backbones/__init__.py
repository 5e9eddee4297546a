"""Feature extractors. Each returns ``{"features": (B, D), "maps": [stage outputs]}``.

``maps`` (the output of every stage) is what PODNet's pooled distillation needs; methods
that do not use it ignore it, and it costs nothing since the tensors exist anyway.
Backbones register themselves by name; ``feature_dim`` is an attribute of each module.
"""
