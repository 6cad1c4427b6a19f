"""Weightscope's computing core: data, settings, trainer, runs, analysis, pictures, charts.

Nothing here imports Streamlit (the app's Streamlit code is the ``ui`` package): the
tests, the benchmark and scripts use these modules directly.
"""
