"""Overfitting and regularization: the noise is overfitting, and penalties remove it."""
