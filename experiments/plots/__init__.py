"""dvc.yaml's plot templates (the JSON files here) and the offline page of `dvc plots show` (offline.py)."""
