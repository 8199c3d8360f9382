"""Metrics and reports: pass@k (unbiased), APPS strict accuracy and test-case average, n@k."""
