"""Test helpers, imported as ``helpers.<module>`` (pytest puts ``tests/`` on the path): ``shared`` (../shared and
skips), ``images`` (image files and folders), ``runs`` (small runs, torchrun), ``records`` (records made in tests),
``syncs`` (the host-sync probe), ``gpu_race`` (the nvJPEG race A/B), ``corruption_reference`` (imagecorruptions
loaded with its shims from ``benchmarks/references/``, skipped when absent),
``browser`` (headless Chromium screenshots)."""
