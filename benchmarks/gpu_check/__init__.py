"""The GPU check (issue 25): the steps ``benchmarks/gpu_check.sh`` runs on a lent GPU machine, each in its own
process under its own ``timeout``, the summary rebuilt after every step, and the carried folder (``carry``) that
holds what that machine lacks. ``python -m benchmarks.gpu_check --help`` lists the commands."""
