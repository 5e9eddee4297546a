"""The training engine: the one task loop, the step, evaluation and checkpoints.

Methods never write a training loop or call ``backward``; they override the hooks of
:class:`cil_core.methods.base.Method`, and the :class:`Learner` here calls them.
"""
