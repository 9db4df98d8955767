"""Predictive lifecycle models (BG/NBD, Gamma-Gamma, CLV), pure and vectorised."""
