"""AIGC Studio backend: the domain library shared by the studio and the worker.

Accounts, the credits ledger, cost and memory formulas, workflow specs, the asset
store, the job lifecycle and the scheduler. It never imports ``studio`` or ``agent``.
"""
