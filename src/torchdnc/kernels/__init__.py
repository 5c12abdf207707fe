"""Compiled kernels: the fused C++ DNC recurrence (`torchdnc.kernels.fused`)."""
