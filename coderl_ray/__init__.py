"""coderl_ray: CodeRL (actor-critic reinforcement learning for code generation) as a distributed pipeline on Ray."""

__version__ = "0.1.0"
