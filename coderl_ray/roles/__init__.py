"""Roles that live for a whole run: generators, sandbox executors, critic scorers and trainers.

A pipeline run starts each role once (:class:`Roles`), keeps its models in memory, and publishes new weights to the
roles that read them by version (:mod:`coderl_ray.roles.weights`). Both loops run on them: the staged loop (the
original CodeRL's: sample a round, then train) and the online loop (generation, execution, critic and RL overlap,
with a bound on staleness: :mod:`coderl_ray.online`).
"""
