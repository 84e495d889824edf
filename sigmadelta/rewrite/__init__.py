"""Graph rewrite: trace a model with torch.fx and insert the Sigma-Delta modules (see README.md here)."""

from .graph import RewriteResult, rewrite
from .patterns import supported_ops_text

__all__ = ["RewriteResult", "rewrite", "supported_ops_text"]
