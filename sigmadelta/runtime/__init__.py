"""Execution backends that lower the dense reference network (see ``SigmaDeltaNet.set_backend``)."""
