"""Environments for reinforcement learning (`torchdnc.envs.shrdlu`: Mini-SHRDLU)."""
