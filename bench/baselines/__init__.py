"""Baselines, reimplemented faithfully so jobsys is measured against them in the same run:

- original_plan: the fan-out the project replaces (spec section 8).
- naive_queue: the minimal SKIP LOCKED queue of CALIBRATION.md.
"""
