"""Evaluation stage: inference on the cache, scoring with lesion-bootstrap CIs, the external test
set, the metrics themselves, and the error analysis."""
