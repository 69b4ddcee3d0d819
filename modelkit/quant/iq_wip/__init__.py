"""Kernels of the low-bit types (TQ, FP4, Q1_0/Q2_0, IQ1/IQ2/IQ3), waiting to join quant.kernels."""
