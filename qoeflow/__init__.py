"""qoeflow: a declarative DAG for the QoE-aware deep-learning lifecycle."""

__version__ = "0.1.0"
