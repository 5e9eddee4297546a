"""Approaches, one module each; the module name is the ``--approach`` value.

``cil_core.registry.load_all`` imports every module here, which registers it.
"""
