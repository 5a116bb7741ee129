"""The journey definition language (``definition``) and its checks (``validate``)."""
