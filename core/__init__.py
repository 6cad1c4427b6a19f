"""Weightscope's computing core: data, trainer, metrics, pictures, charts.

Only :mod:`core.state` imports Streamlit; everything else is plain Python
that the tests and the benchmark use directly.
"""
