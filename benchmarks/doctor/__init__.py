"""The doctor's labelled benchmark: tiny training scenarios with a known fault (or none), each recorded with
gradlens, its ground truth measured in the scenario itself; ``python -m benchmarks.doctor`` (``make
doctor-bench``) prints per-symptom precision and recall, detection delay and time."""
