"""Latency regression testing: per-frame records, statistics, the A/B gate, reports.

Sits above the pipeline (DESIGN.md, layering): it runs :class:`edge.pipeline.Pipeline` with
its ``on_record`` hook and never the other way round.

Modules
-------
records      per-frame records (collector for the pipeline hook, NPZ save/load)
stats        summaries per stage and end to end (percentiles, jitter, deadline misses with a
             Clopper-Pearson interval, latency in frame periods, drops)
fingerprint  the unit's fingerprint and the hardware key derived from it
gate         the paired round-based A/B gate (Wilcoxon, bootstrap, Holm) and its thresholds
slow         a test-only stage wrapper that slows a named stage by a set amount
paced        the paced camera (triggers on the frame-period grid) and the marker LED
marker       glass to glass: the marker found in the output, timed back to its flash
session      a measurement session (one arm: the chain of edge.pipeline.assembly; rounds)
clocks       clock state before and after every round, and the rule that voids a round
worker       arm B of ``ab --python-b``: another installed build in a worker subprocess
ab           measure, ABBA A/B runs with more rounds while INCONCLUSIVE, compare results
store        results on disk, baselines per hardware key and their history
report       the self-contained HTML report (matplotlib, optional extra ``report``)
"""
