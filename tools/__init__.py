"""Simulator, reference servers, provisioning and benchmarks."""
