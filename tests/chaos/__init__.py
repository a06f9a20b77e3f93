"""Chaos suite: faults injected at random points under a steady load (see docs/operations.md)."""
