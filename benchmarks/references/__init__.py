"""Reference implementations, one copy for the equality tests (``tests/``) and the speed comparison (``ibnbench
bench --imagenet-p / --c-bar / --corruptions --reference benchmarks/references/FILE.py:FUNCTION``): numpy ports
of the published generators, never imported by the ``ibnbench`` package. ``imagecorruptions_package``: the
reference package importable on today's stack; ``imagenet_c``, ``imagenet_p``, ``c_bar``: one function each that
the bench times (``corrupt`` or ``sequence``)."""
